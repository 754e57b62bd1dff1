"""Benchmark: the whole pipeline at a size, stage by stage, as the DAGs run it.

    python benchmarks/pipeline_scale.py tiny      # seconds: a check that every stage runs
    python benchmarks/pipeline_scale.py small     # 20k users, 5k items, ~1M events
    python benchmarks/pipeline_scale.py medium    # 100k users, 20k items, ~5M events
    python benchmarks/pipeline_scale.py large     # 1M users, 100k items, ~50M events (the issue's target)
    python benchmarks/pipeline_scale.py large --stop-after dbt_build   # then, after a change to training:
    python benchmarks/pipeline_scale.py large --resume-after dbt_build # the rest of the same run

The simulated log (generated first, not part of the figures) is ingested one landing day at a
time with the ``raw_batch`` checkpoint after each day (the ingest DAG's two tasks), then
``dbt build`` and the ``marts`` checkpoint (transform DAG), training and registration (train
DAG) and the publication (publish DAG). The last landing day is held back and then run as the
daily increment on top of the full warehouse: ingest + checkpoint of that day, dbt build,
marts checkpoint, train, publish. The daily training backtests only the leaders of the full run's model
selection on the newest fold (``RECFORGE_SELECTION_INTERVAL_DAYS=7`` and ``RECFORGE_SELECTION_FOLDS=1``
unless the environment sets them: a weekly full selection, pipelines/training/selection.py), as a
production schedule would.

Each stage runs in its own child process (as each Airflow task does); its wall time and its
peak memory, the largest sum of RSS over the child and all its descendants (dbt, MLflow
helpers), sampled every 0.1 s, are reported per stage and for the whole run. Results go to
``<home>/pipeline_scale.json`` and one Markdown row per stage to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

# large gives DuckDB 8 GB of the 24 (dbt_daily.py: the day's dbt build 0.84 of its time at 4 GB; training peaks higher).
# Landing lines are ~3.2 per user and day in the simulator's defaults (measured on the 1M-event log).
# The short logs keep 2-3 days each for validation and test, so training still sees most of them.
SIZES = {
    "tiny": {"sim_users": 400, "sim_items": 160, "sim_days": 12, "sim_categories": 6, "sim_bot_users": 2,
             "test_days": 3, "valid_days": 3, "publish_top_n": 50, "als_factors": 16, "als_iterations": 12},
    "small": {"sim_users": 20_000, "sim_items": 5_000, "sim_days": 18, "sim_categories": 20,
              "test_days": 3, "valid_days": 3},
    "medium": {"sim_users": 100_000, "sim_items": 20_000, "sim_days": 16, "sim_categories": 40,
               "test_days": 2, "valid_days": 2, "sim_engine": "columns"},
    "large": {"sim_users": 1_000_000, "sim_items": 100_000, "sim_days": 16, "sim_categories": 50,
              "test_days": 2, "valid_days": 2, "sim_engine": "columns", "warehouse_memory_limit": "8GB"},
}  # fmt: skip

PRELUDE = (
    "import logging, os, sys, time; from datetime import UTC, datetime, timedelta; "
    "logging.basicConfig(level=logging.WARNING, stream=sys.stderr); "
    "from pipelines.settings import get_settings; s = get_settings(); "
    "start = datetime.combine(s.sim_start_date, datetime.min.time(), tzinfo=UTC); "
    "first, last = int(os.environ['BENCH_FIRST_DAY']), int(os.environ['BENCH_LAST_DAY']); "
)

STAGE_CODE = {
    "simulate": "from pipelines.simulate import simulate; s.ensure_dirs(); print(simulate(s).events_written, 'lines')",
    # The ingest DAG: one run per landing day, each `ingest_events` then `validate_raw_events`.
    "ingest": "from pipelines.ingest import ingest_interval; "
    "from pipelines.validation.checkpoints import validate_raw_batch; n_in = n_ok = 0\n"
    "for day in range(first, last + 1):\n"
    "    d = start + timedelta(days=day); r = ingest_interval(s, d, d + timedelta(days=1))\n"
    "    validate_raw_batch(s, d, d + timedelta(days=1)); n_in += r.rows_input; n_ok += r.rows_accepted\n"
    "print(f'{last - first + 1} landing days: {n_in} rows in, {n_ok} accepted')",
    "dbt_build": "from pipelines.warehouse.transform import build_warehouse; print(build_warehouse(s).summary())",
    "validate_marts": "from pipelines.validation.checkpoints import validate_marts; print(validate_marts(s).summary())",
    "train": "from pipelines.training.train import train_and_register; print(train_and_register(s).summary())",
    "publish": "from pipelines.publication.publish import publish; print(publish(s).summary())",
}
PIPELINE = ("ingest", "dbt_build", "validate_marts", "train", "publish")


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants now (0 for any that already ended)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(command: list[str], env: dict[str, str], interval: float = 0.1) -> tuple[int, float, int, str]:
    """Run `command`; return its exit code, wall seconds, peak RSS of its process tree (bytes) and stdout."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def sample() -> None:
        try:
            watched = psutil.Process(child.pid)
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss(watched))
                done.wait(interval)
        except psutil.NoSuchProcess:
            pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = child.stdout.read()
    code = child.wait()
    done.set()
    sampler.join()
    return code, time.perf_counter() - started, peak[0], output


def run_stage(stage: str, env: dict[str, str], first_day: int, last_day: int, phase: str) -> dict:
    env = {**env, "BENCH_FIRST_DAY": str(first_day), "BENCH_LAST_DAY": str(last_day)}
    code, seconds, peak, output = run_measured([sys.executable, "-c", PRELUDE + STAGE_CODE[stage]], env)
    if code != 0:
        raise SystemExit(f"{phase} stage {stage} failed (exit {code}); its error is above")
    lines = [line for line in output.splitlines() if line.strip()]
    row = {"phase": phase, "stage": stage, "seconds": round(seconds, 1), "peak_rss_mib": round(peak / 2**20),
           "output": lines[-1] if lines else ""}  # fmt: skip
    print(f"| {phase} | {stage} | {row['seconds']} s | {row['peak_rss_mib']} MiB | {row['output'][:100]} |", flush=True)
    return row


def clear_home(home: Path, keep_landing: bool) -> None:
    """Every run starts from the landing files alone: remove the rest of a home this benchmark made."""
    if not home.exists():
        return
    ours = (home / "pipeline_scale.json").exists() or (home / "landing" / "simulation.json").exists()
    if any(home.iterdir()) and not ours:
        raise SystemExit(f"{home} is not empty and was not made by this benchmark: choose another --home")
    for path in home.iterdir():
        if keep_landing and path.name == "landing":
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size", choices=SIZES)
    parser.add_argument("--home", type=Path, help="default /tmp/recforge-scale-SIZE (outside the repository)")
    parser.add_argument("--keep-log", action="store_true", help="reuse the simulated log already in --home")
    only = parser.add_mutually_exclusive_group()  # each names a part of the run; together they would run nothing
    only.add_argument("--generate-only", action="store_true", help="simulate the log and stop (nothing timed)")
    only.add_argument("--stop-after", choices=PIPELINE, help="end the full run after this stage (no daily run)")
    parser.add_argument(
        "--resume-after", choices=PIPELINE[:-1],
        help="continue the full run a --stop-after at this stage left in --home (its report is extended): the next "
        "stages after a change to their code, without simulating and ingesting again",
    )  # fmt: skip
    only.add_argument(
        "--daily-only", action="store_true",
        help="only the daily increment again, on the warehouse an earlier run of this size left in --home (its "
        "last landing day is replaced, as a re-run of that day is); the report goes to pipeline_scale_daily.json",
    )  # fmt: skip
    args = parser.parse_args()
    size = SIZES[args.size]
    home = (args.home or Path(f"/tmp/recforge-scale-{args.size}")).resolve()
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "RECFORGE_HOME": str(home), "PYTHONPATH": str(repo)}
    env.update({f"RECFORGE_{key.upper()}": str(value) for key, value in size.items()})
    env.setdefault("RECFORGE_SELECTION_INTERVAL_DAYS", "7")  # the daily training: the full selection's leaders
    env.setdefault("RECFORGE_SELECTION_FOLDS", "1")  # ... on the newest fold

    if (args.daily_only or args.resume_after) and not (home / "pipeline_scale.json").exists():
        option = "--daily-only" if args.daily_only else "--resume-after"
        raise SystemExit(f"{option} needs the full run's home: {home} has no pipeline_scale.json")
    if args.resume_after and (args.daily_only or args.generate_only or args.keep_log):
        parser.error("--resume-after continues a full run: not with --daily-only, --generate-only or --keep-log")
    earlier = json.loads((home / "pipeline_scale.json").read_text())["stages"] if args.resume_after else []
    if args.resume_after and [r["stage"] for r in earlier if r["phase"] == "full"][-1:] != [args.resume_after]:
        raise SystemExit(f"{home}'s full run did not stop after {args.resume_after}: its stages are {earlier}")
    reuse = args.keep_log and (home / "landing" / "simulation.json").exists()
    if not args.daily_only and not args.resume_after:  # the daily increment alone builds on what the full run left
        clear_home(home, keep_landing=reuse)
        if not reuse:
            generated = run_stage("simulate", env, 0, 0, "generate")
            print(f"(generation is not part of the figures: {generated['seconds']} s)")
    if args.generate_only:
        return 0

    days = size["sim_days"]
    rows: list[dict] = list(earlier)
    done = PIPELINE[: PIPELINE.index(args.resume_after) + 1] if args.resume_after else ()
    for stage in () if args.daily_only else PIPELINE:  # the full warehouse: every landing day but the last
        if stage in done:
            continue
        rows.append(run_stage(stage, env, 0, days - 2, "full"))
        if stage == args.stop_after:
            break
    if not args.stop_after:
        for stage in PIPELINE:  # one new day on top of it
            rows.append(run_stage(stage, env, days - 1, days - 1, "daily"))

    report = {
        "size": args.size, "settings": size, "stages": rows, "measured_at": datetime.now(UTC).isoformat(),
        "machine": platform.platform(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
    }  # fmt: skip
    for phase in ("full", "daily"):
        mine = [r for r in rows if r["phase"] == phase]
        if mine:
            total = round(sum(r["seconds"] for r in mine), 1)
            peak = max(r["peak_rss_mib"] for r in mine)
            report[f"{phase}_seconds"], report[f"{phase}_peak_rss_mib"] = total, peak
            print(f"| {phase} | total | {total} s | {peak} MiB (largest stage) | |")
    (home / f"pipeline_scale{'_daily' if args.daily_only else ''}.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
