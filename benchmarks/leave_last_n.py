"""Benchmark: the leave-last-n split's hold-out step, sorting codes against the pandas group-by it replaced.

    python benchmarks/leave_last_n.py [--events 10000000] [--users 1000000] [--items 100000] [--rounds 3]

A random log of that size (users, items, times over 16 days) as an EventLog; each round times the
group-by (the code before, kept here as the reference) and ``_last_distinct_items`` back to back,
in alternating order, and checks that they hold out the same pairs. Prints each time and the median
ratio of the rounds (new / reference).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.evaluation.splits import EventLog, _last_distinct_items  # noqa: E402


def group_by_reference(log: EventLog, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pandas version (models/evaluation/splits.py before it sorted codes)."""
    pairs = (
        pd.DataFrame({"u": log.users, "i": log.items, "ts": log.ts})
        .groupby(["u", "i"], as_index=False)["ts"]
        .min()
        .sort_values(["u", "ts", "i"])
    )
    pairs["from_end"] = pairs.groupby("u").cumcount(ascending=False)
    pairs["n_items"] = pairs.groupby("u")["i"].transform("size")
    held = pairs[(pairs["from_end"] < n) & (pairs["n_items"] > n)]
    return held["u"].to_numpy(), held["i"].to_numpy(), held["ts"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    log = EventLog.from_codes(
        np.array([f"u{k:08d}" for k in range(args.users)]), np.array([f"i{k:08d}" for k in range(args.items)]),
        np.sort(rng.integers(0, args.users, args.events)), rng.integers(0, args.items, args.events),
        rng.integers(0, 16 * 86_400, args.events), np.ones(args.events), 14,
    )  # fmt: skip
    ratios = []
    for round_number in range(args.rounds):
        times = {}
        contenders = (("reference", group_by_reference), ("new", _last_distinct_items))
        for name, split in contenders[:: 1 - 2 * (round_number % 2)]:  # alternating order
            start = time.perf_counter()
            held = split(log, 1)
            times[name] = time.perf_counter() - start
            times[name + "_pairs"] = held
        assert all(np.array_equal(a, b) for a, b in zip(times["reference_pairs"], times["new_pairs"], strict=True))
        ratios.append(times["new"] / times["reference"])
        print(f"round {round_number + 1}: reference {times['reference']:.2f} s, new {times['new']:.2f} s, "
              f"ratio {ratios[-1]:.3f}", flush=True)  # fmt: skip
    print(f"median ratio new / reference {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
