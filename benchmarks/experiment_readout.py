"""Benchmark: the experiment readout over N logged impressions (default 10 million) in a DuckDB warehouse.

    nice -n 10 python benchmarks/experiment_readout.py                 # 10 million impressions, 3 repeats
    nice -n 10 python benchmarks/experiment_readout.py --impressions 1000000 --repeats 5

Generates (not timed) seeded synthetic traffic for a three-arm experiment with a holdback over 14 days
(pipelines/experiments/synthetic.py: users assigned by the real salted hash, about 22 impressions per
user), writes it as marts.slate_items with the contract's column types plus a pre-period table, then
times ``compute_readout`` end to end: the per-user-and-day aggregation in DuckDB, the transfer to numpy,
14 daily looks of every metric with CUPED and the mSPRT, SRM, Holm and the decision.

The reference, timed in the same run and alternated with the readout, is the cheapest pass over the
same rows DuckDB can do: one ``group by variant`` of count, clicks, conversions and revenue (what a
per-impression readout that ignores users would scan). The readout's cost is reported as a ratio of it
(median and spread over the repeats), with the machine's load average, so runs on a busy shared machine
stay comparable. Results are appended to benchmarks/results/experiment_readout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipelines.experiments.contract import SLATE_ITEM_COLUMNS, SLATE_ITEMS_RELATION
from pipelines.experiments.declaration import parse_experiment
from pipelines.experiments.readout import compute_readout
from pipelines.experiments.synthetic import pre_period_rows, slate_item_rows, synthetic_traffic
from pipelines.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results" / "experiment_readout.json"
DAYS = 14
IMPRESSIONS_PER_USER = 22.4  # measured on this generator: (mean active days 7.5) x 3 per day x activity mean 1

EXPERIMENT = {
    "name": "benchmark",
    "variants": [
        {"name": "control", "alias": "champion", "share": 0.3},
        {"name": "b", "alias": "challenger", "share": 0.3},
        {"name": "c", "version": "7", "share": 0.3},
    ],
    "holdback": 0.1,
    "start": "2026-12-01T00:00:00+00:00",
    "end": "2026-12-15T00:00:00+00:00",
    "guardrails": [{"metric": "conversion", "max_drop": 0.05}],
}

REFERENCE = f"""
select variant, count(*), sum(cast(clicked as int)), sum(cast(converted as int)), sum(revenue)
from {SLATE_ITEMS_RELATION} where experiment = 'benchmark' group by variant
"""


def build(path: Path, impressions: int, seed: int) -> tuple[int, int]:
    experiment = parse_experiment(EXPERIMENT, Path("benchmark.yaml"), 0)
    users = int(impressions / IMPRESSIONS_PER_USER)
    began = time.perf_counter()
    traffic = synthetic_traffic(experiment, users, DAYS, seed, lifts={"c": 1.05})
    slate = slate_item_rows(traffic, experiment.name, experiment.start)
    pre = pre_period_rows(traffic)
    del traffic
    select = ", ".join(f"cast({c} as {t}) as {c}" for c, t in SLATE_ITEM_COLUMNS.items())
    with duckdb.connect(str(path)) as con:
        con.register("slate", slate)
        con.register("pre", pre)
        con.execute("create schema marts")
        con.execute(f"create table {SLATE_ITEMS_RELATION} as select {select} from slate")
        con.execute(
            "create table marts.interaction_events as select user_id, "
            "timestamptz '2026-11-30 00:00:00+00' as event_ts from pre, range(cast(pre.pre as bigint))"
        )
        rows = con.execute(f"select count(*) from {SLATE_ITEMS_RELATION}").fetchone()[0]
    print(f"generated {rows:,} impressions of {users:,} users in {time.perf_counter() - began:.0f}s", flush=True)
    return rows, users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impressions", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    experiment = parse_experiment(EXPERIMENT, Path("benchmark.yaml"), 0)
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(home=Path(scratch) / "home")
        path = Path(scratch) / "warehouse.duckdb"
        rows, users = build(path, args.impressions, args.seed)
        readout_s, reference_s, loads = [], [], []
        for repeat in range(args.repeats):
            with duckdb.connect(str(path), read_only=True) as con:
                con.execute("set TimeZone = 'UTC'")
                began = time.perf_counter()
                con.execute(REFERENCE).fetchall()
                reference_s.append(time.perf_counter() - began)
                began = time.perf_counter()
                readout = compute_readout(con, experiment, settings, experiment.end)
                readout_s.append(time.perf_counter() - began)
            loads.append(os.getloadavg()[0])
            print(
                f"repeat {repeat + 1}/{args.repeats}: readout {readout_s[-1]:.1f}s, reference scan "
                f"{reference_s[-1]:.2f}s (ratio {readout_s[-1] / reference_s[-1]:.1f}), load {loads[-1]:.1f}",
                flush=True,
            )
    ratios = [r / s for r, s in zip(readout_s, reference_s, strict=True)]
    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "impressions": rows,
        "users": users,
        "days": DAYS,
        "arms": list(experiment.arms),
        "readout_seconds": readout_s,
        "reference_scan_seconds": reference_s,
        "readout_median_s": statistics.median(readout_s),
        "ratio_median": statistics.median(ratios),
        "ratio_spread": [min(ratios), max(ratios)],
        "load_average_1m": loads,
        "cpus": os.cpu_count(),
        "decision": readout.decision,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*history, result], indent=2) + "\n")
    print(
        f"readout of {rows:,} impressions ({users:,} users, {DAYS} daily looks): median "
        f"{result['readout_median_s']:.1f}s over {args.repeats} repeats ({min(readout_s):.1f}-{max(readout_s):.1f}s), "
        f"{result['ratio_median']:.1f}x the reference scan ({min(ratios):.1f}-{max(ratios):.1f}x), load average "
        f"{statistics.median(loads):.1f}; decision {readout.decision}"
    )


if __name__ == "__main__":
    main()
