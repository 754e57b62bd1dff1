"""Benchmark: training's data step (read the event log, cut the folds), two code trees side by side.

    python benchmarks/pipeline_scale.py small --stop-after dbt_build --home /tmp/scale-small   # once
    python benchmarks/training_data.py --home /tmp/scale-small --old /path/to/other/tree --rounds 3
    python benchmarks/training_data.py --home /tmp/scale-small --old /path/to/other/tree --train

Each measurement is a fresh child process that imports the tree it is given (``PYTHONPATH``) and
calls ``load_evaluation_data`` (catalog, event log, folds: the step training, evaluation and
tuning all begin with) on the same warehouse, with the ``pipeline_scale`` size's settings. The two
trees run in alternating rounds (old, new, old, new, ...) so that load on a shared machine falls on
both alike. Reported per tree: the step's wall time, the process's peak RSS (``ru_maxrss``) and its
RSS after the imports, before the step (the step's own share is the difference), median and range.

``--train`` measures a whole ``train_and_register`` instead (popularity and ALS, tuning off, so
that the data path is a visible share), each run on a fresh copy of the home's warehouse (copied
before the clock starts) so that no run finds an earlier run's champion to re-fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_results import median_range  # noqa: E402
from pipeline_scale import SIZES  # noqa: E402  (the sizes' settings, kept in one place)

CHILD = """
import json, logging, resource, time
import numpy, pandas, pyarrow, scipy.sparse, duckdb  # the imports, before the baseline
from pipelines.settings import get_settings
from pipelines.training.data import load_evaluation_data
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
settings = get_settings()
before = rss_mib()
started = time.perf_counter()
data = load_evaluation_data(settings)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "baseline_mib": before, "events": len(data.log), "users": len(data.log.user_ids),
                  "outcome": [f.describe() for f in data.folds]}))
"""


TRAIN_CHILD = """
import json, logging, resource, time
import numpy, pandas, pyarrow, scipy.sparse, duckdb, mlflow
from pipelines.settings import get_settings
from pipelines.training.train import train_and_register
def rss_mib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
settings = get_settings()
settings.ensure_dirs()
before = rss_mib()
started = time.perf_counter()
result = train_and_register(settings)
seconds = time.perf_counter() - started
peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak, "baseline_mib": before, "events": 0,
                  "outcome": [result.summary()]}))
"""
TRAIN_SETTINGS = {"RECFORGE_TRAIN_CANDIDATES": '["popularity", "als"]', "RECFORGE_TUNE_ENABLED": "false"}


def measure(tree: Path, env: dict[str, str], train: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="training-data-") as scratch:
        if train:  # a fresh home holding only the warehouse
            shutil.copy(Path(env["RECFORGE_HOME"]) / "warehouse.duckdb", Path(scratch) / "warehouse.duckdb")
            env = {**env, **TRAIN_SETTINGS, "RECFORGE_HOME": scratch}
        done = subprocess.run(
            [sys.executable, "-c", TRAIN_CHILD if train else CHILD],
            env={**env, "PYTHONPATH": str(tree)},
            cwd=tree,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: the measured step failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a home pipeline_scale.py built (its warehouse)")
    parser.add_argument("--size", choices=SIZES, default="small", help="the settings the home was built with")
    parser.add_argument("--old", type=Path, required=True, help="the other code tree (e.g. a worktree of main)")
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="measure a whole train_and_register instead")
    args = parser.parse_args()
    env = {**os.environ, "RECFORGE_HOME": str(args.home.resolve())}
    env.update({f"RECFORGE_{key.upper()}": str(value) for key, value in SIZES[args.size].items()})
    results: dict[str, list[dict]] = {"old": [], "new": []}
    for round_ in range(args.rounds):
        for label, tree in (("old", args.old), ("new", args.new)):
            row = measure(tree.resolve(), env, args.train)
            results[label].append(row)
            print(
                f"round {round_ + 1} {label}: {row['seconds']:.2f} s, peak {row['peak_mib']:.0f} MiB "
                f"(after imports {row['baseline_mib']:.0f} MiB), {row['events']} events",
                flush=True,
            )
    old, new = results["old"], results["new"]
    if old[0]["outcome"] != new[0]["outcome"]:
        print("note: the outcomes differ (folds, or the training summary):", old[0]["outcome"], new[0]["outcome"])
    print("\n| tree | seconds | peak RSS (MiB) | RSS after imports (MiB) |\n| --- | --- | --- | --- |")
    for label, rows in results.items():
        seconds = [r["seconds"] for r in rows]
        peaks, bases = [r["peak_mib"] for r in rows], [r["baseline_mib"] for r in rows]
        print(f"| {label} | {median_range(seconds)} | {median_range(peaks)} | {median_range(bases)} |")
    ratios = [n["seconds"] / o["seconds"] for o, n in zip(old, new, strict=True)]
    print(f"\nnew / old wall time, round by round: {median_range(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
