"""Publication's lists for a slice of real users: the bounded search against scoring every item, side by side.

    python benchmarks/list_scoring.py --home /tmp/scale-large --users 20000 --rounds 3

Loads the champion a pipeline run registered under `--home` (``pipelines/publication/publish.py``'s
own loading and warehouse reads), takes `--users` users in the order publication scores them (from
`--first`), and builds their lists with ``lists_of`` (scoring, every business rule, reasons) twice per
round in one process, alternating which goes first: the factor models' bounded search
(``models/bounded_top_k.py``, the default for catalogs from ``BOUNDED_MIN_ITEMS`` items) and every item
scored (the base class's block loop, which the bounded search replaces). Prints each round's times and
their ratio, how the two lists differ (rows with another item or reason; the largest score gap, which
is float32 rounding of the product), and how much of the users x items product the bounded search
computed. Results are appended to
``benchmarks/results/list_scoring.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import models.bounded_top_k  # noqa: E402
import models.factorization  # noqa: E402
from models.base import top_k  # noqa: E402
from models.lists.ranked import ListRules  # noqa: E402
from models.lists.stored import ListInputs, lists_of, users_by_id  # noqa: E402
from pipelines.publication.publish import load_champion, read_items, read_purchases  # noqa: E402
from pipelines.settings import Settings  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "list_scoring.json"
BOUNDED = models.factorization.BOUNDED_MIN_ITEMS


def timed_lists(model, users, rules, inputs, bounded: bool):
    models.factorization.BOUNDED_MIN_ITEMS = BOUNDED if bounded else 1 << 62
    started = time.perf_counter()
    batch = lists_of(model, users, rules, inputs)
    return time.perf_counter() - started, batch


def differences(bounded, every_item) -> dict:
    """How the two searches' lists differ: rows with another item or reason anywhere, the largest score gap.

    The product of a block of users and items is summed by BLAS in an order that depends on the block's
    shape, so a score can differ in its last bit (the old search had that between batch sizes too), and
    two items within that rounding can swap places.
    """
    items_differ = (bounded.top.ranked != every_item.top.ranked).any(axis=1)
    reasons_differ = (bounded.reasons != every_item.reasons).any(axis=1)
    both = np.isfinite(bounded.top.scores) & np.isfinite(every_item.top.scores)
    gap = np.abs(bounded.top.scores[both] - every_item.top.scores[both])
    return {
        "rows_with_other_items": int(items_differ.sum()),
        "rows_with_other_reasons": int(reasons_differ.sum()),
        "largest_score_gap": float(gap.max(initial=0)),
        "same_empty_slots": bool(np.array_equal(both, np.isfinite(bounded.top.scores))),
    }


def scored_share(model, users, rules, inputs) -> float:
    """Share of the users x items cells the bounded search scored (every call of ``recommend`` included)."""
    cells = []

    def counting(dense, k, allowed):
        cells.append(dense.size)
        return top_k(dense, k, allowed)

    models.factorization.BOUNDED_MIN_ITEMS = BOUNDED
    models.bounded_top_k.top_k = counting
    try:
        lists_of(model, users, rules, inputs)
    finally:
        models.bounded_top_k.top_k = top_k
    return sum(cells) / (len(users) * len(model.item_ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="a RECFORGE_HOME with a registered champion")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--first", type=int, default=300_000, help="position of the first user in id order")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["RECFORGE_HOME"] = str(args.home)
    settings = Settings()
    model, facts = load_champion(settings)
    if not isinstance(model, models.factorization.FactorizationRecommender):
        raise SystemExit(f"the champion is {model.name}, not a factor model: nothing to bound")
    inputs = ListInputs.of(model, read_items(settings), read_purchases(settings))
    rules = ListRules.from_settings(settings)
    users = users_by_id(model)[args.first : args.first + args.users]
    print(f"champion {model.name} v{facts['version']}: {len(model.user_ids):,} users x {len(model.item_ids):,} items")
    share = scored_share(model, users, rules, inputs)
    print(f"bounded search scored {share:.3f} of the {len(users):,} users x {len(model.item_ids):,} items")
    rounds = []
    for round_number in range(args.rounds):
        order = (True, False) if round_number % 2 == 0 else (False, True)
        times, lists = {}, {}
        for bounded in order:
            times[bounded], lists[bounded] = timed_lists(model, users, rules, inputs, bounded)
        differ = differences(lists[True], lists[False])
        ratio = times[True] / times[False]
        rounds.append({"bounded_s": times[True], "every_item_s": times[False], "ratio": ratio, **differ})
        print(
            f"round {round_number}: bounded {times[True]:.2f} s, every item {times[False]:.2f} s, "
            f"ratio {ratio:.3f}; {differ}"
        )
    ratios = [r["ratio"] for r in rounds]
    spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
    print(f"bounded / every item: median {statistics.median(ratios):.3f} ({spread})")
    record = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.processor() or platform.machine(),
        "code": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip(),
        "model": f"{model.name} v{facts['version']}",
        "users": len(users),
        "items": len(model.item_ids),
        "scored_share": share,
        "rounds": rounds,
        "median_ratio": statistics.median(ratios),
    }
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*existing, record], indent=2) + "\n")


if __name__ == "__main__":
    main()
