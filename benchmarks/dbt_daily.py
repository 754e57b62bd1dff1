"""Benchmark: one day's `dbt build` on the same warehouse under two or more configurations, in turn.

    python benchmarks/pipeline_scale.py large --stop-after publish --home /tmp/scale-large   # once
    python benchmarks/dbt_daily.py --home /tmp/scale-large --size large \\
        --variant default= --variant groups_122880=row_group_size=122880 --rounds 2

The home's last landing day is ingested first (the ingest DAG's task, as ``pipeline_scale.py``'s
daily run does), then the warehouse file is copied once: that copy is the state every measured
build starts from. Each round restores it and runs ``build_warehouse`` (the transform DAG's task)
in a fresh child process, one variant after another, so load on a shared machine falls on every
variant alike. A variant is ``NAME=`` followed by comma-separated ``KEY=VALUE`` pairs: a
``RECFORGE_*`` setting given to the child, or one of two what-ifs that are not settings:
``row_group_size=N`` (the warehouse's ``ROW_GROUP_SIZE``, which recforge and dbt's profile share,
replaced in the child before dbt attaches the file) and ``dbt_project=PATH`` (another copy of
``dbt_project/``, e.g. the models before a change). Reported per variant: the build's wall time and peak RSS,
median and range; the slowest nodes from dbt's ``run_results.json``; and each variant's wall time
as a share of the first variant's, round by round.

``--prime`` is for variants whose models keep state between builds (incremental models): each variant
first builds the warehouse as it stood before the day with its own models (unmeasured, its seconds
reported as the priming), then the day is ingested on top, and that is the state its measured builds
start from. Without it every variant starts from the one warehouse the home's models left.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paired_results import median_range  # noqa: E402
from pipeline_scale import PRELUDE, SIZES, STAGE_CODE  # noqa: E402  (the sizes and the stages, in one place)

BUILD = """
import json, os, resource, time
import pipelines.warehouse.connection as connection, pipelines.warehouse.transform as transform
if os.environ.get("BENCH_ROW_GROUP_SIZE"):
    connection.ROW_GROUP_SIZE = transform.ROW_GROUP_SIZE = int(os.environ["BENCH_ROW_GROUP_SIZE"])
from pathlib import Path
from pipelines.settings import Settings, get_settings
if os.environ.get("BENCH_DBT_PROJECT"):
    Settings.dbt_project_dir = property(lambda self: Path(os.environ["BENCH_DBT_PROJECT"]))
settings = get_settings()
started = time.perf_counter()
summary = transform.build_warehouse(settings).summary()
seconds = time.perf_counter() - started
nodes = json.loads((transform.dbt_target_dir(settings) / "run_results.json").read_text())["results"]
print(json.dumps({"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "summary": summary, "nodes": {n["unique_id"]: n["execution_time"] for n in nodes}}))
"""


WHAT_IFS = {"row_group_size": "BENCH_ROW_GROUP_SIZE", "dbt_project": "BENCH_DBT_PROJECT"}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, pairs = text.partition("=")
    if not name:
        raise SystemExit(f"--variant {text!r}: give NAME=KEY=VALUE,... (mem8=RECFORGE_WAREHOUSE_MEMORY_LIMIT=8GB)")
    env = {}
    for pair in filter(None, pairs.split(",")):
        key, sep, value = pair.partition("=")
        if not sep or not (key.startswith("RECFORGE_") or key in WHAT_IFS):
            raise SystemExit(f"--variant {name}: {pair!r} is not RECFORGE_<SETTING>=VALUE, {' or '.join(WHAT_IFS)}")
        env[WHAT_IFS.get(key, key)] = value
    return name, env


def build(env: dict[str, str], overrides: dict[str, str], repo: Path, name: str) -> dict:
    """One ``build_warehouse`` in a fresh child process under a variant's overrides: its figures."""
    command = [sys.executable, "-c", BUILD]
    done = subprocess.run(command, env={**env, **overrides}, cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"variant {name}: the build failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a home pipeline_scale.py built (--stop-after)")
    parser.add_argument("--size", choices=SIZES, required=True, help="the size the home was built with")
    parser.add_argument("--variant", action="append", required=True, help="NAME=KEY=VALUE,... (first: reference)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prime", action="store_true", help="each variant builds its own state before the day")
    parser.add_argument(
        "--reuse-primed", action="store_true",
        help="with --prime: start from a variant's state an earlier --prime left in the home (for a change that "
        "leaves the state its models keep as it was)",
    )  # fmt: skip
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variant)
    if len(variants) < 2:
        raise SystemExit("give at least two --variant (distinct names): the first is the reference")
    home = args.home.resolve()
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RECFORGE_HOME": str(home), "PYTHONPATH": str(repo)}
    env.update({f"RECFORGE_{key.upper()}": str(value) for key, value in SIZES[args.size].items()})
    warehouse, snapshot = home / "warehouse.duckdb", home / "warehouse.before-day.duckdb"
    last = SIZES[args.size]["sim_days"] - 1
    day_env = {**env, "BENCH_FIRST_DAY": str(last), "BENCH_LAST_DAY": str(last)}
    if not warehouse.exists():
        raise SystemExit(f"{home} has no warehouse.duckdb: run pipeline_scale.py {args.size} --stop-after first")
    if args.prime:
        before_ingest = home / "warehouse.before-ingest.duckdb"
        if not before_ingest.exists():  # the warehouse as pipeline_scale.py left it, before the day
            shutil.copyfile(warehouse, before_ingest)
        starts = {}
        for name, overrides in variants.items():
            starts[name] = home / f"warehouse.before-day.{name}.duckdb"
            if args.reuse_primed and starts[name].exists():
                print(f"priming {name}: reused {starts[name].name}")
                continue
            shutil.copyfile(before_ingest, warehouse)
            primed = build(env, overrides, repo, name)
            print(f"priming {name}: {primed['seconds']:.1f} s (its models' build of the warehouse before the day)")
            subprocess.run([sys.executable, "-c", PRELUDE + STAGE_CODE["ingest"]], env=day_env, check=True)
            shutil.copyfile(warehouse, starts[name])
    else:
        if not snapshot.exists():  # the day's ingest once: every build starts from the warehouse it leaves
            subprocess.run([sys.executable, "-c", PRELUDE + STAGE_CODE["ingest"]], env=day_env, check=True)
            shutil.copyfile(warehouse, snapshot)
        starts = dict.fromkeys(variants, snapshot)

    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, overrides in variants.items():
            shutil.copyfile(starts[name], warehouse)
            row = build(env, overrides, repo, name)
            runs[name].append(row)
            print(f"round {round_ + 1} {name}: {row['seconds']:.1f} s, peak {row['peak_mib']:.0f} MiB", flush=True)

    reference = next(iter(variants))
    print("\n| variant | dbt build (s) | peak RSS (MiB) | share of the reference, round by round |")
    print("| --- | ---: | ---: | ---: |")
    for name, rows in runs.items():
        shares = [r["seconds"] / ref["seconds"] for r, ref in zip(rows, runs[reference], strict=True)]
        print(
            f"| {name} | {median_range([r['seconds'] for r in rows], 1)} | "
            f"{median_range([r['peak_mib'] for r in rows], 0)} | {median_range(shares)} |"
        )
    for name, rows in runs.items():
        medians = {node: statistics.median(r["nodes"].get(node, 0.0) for r in rows) for node in rows[0]["nodes"]}
        slowest = sorted(medians.items(), key=lambda item: -item[1])[:10]
        tests = sum(seconds for node, seconds in medians.items() if node.startswith("test."))
        print(f"\n{name}: tests {tests:.1f} s in all; slowest nodes (median s): "
              + ", ".join(f"{node.split('.')[-1]} {seconds:.1f}" for node, seconds in slowest))  # fmt: skip
    (home / "dbt_daily.json").write_text(json.dumps({"variants": variants, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
