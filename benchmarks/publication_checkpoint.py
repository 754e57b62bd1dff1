"""Benchmark: the `publication` checkpoint on a generated publication of N users x top 100.

    python benchmarks/publication_checkpoint.py 20000
    python benchmarks/publication_checkpoint.py 200000 --top-n 100 --items 20011

Generates (not timed) lists where every user has `top_n` distinct items, a catalog and 20
purchases per user that the lists avoid, writes the lists as user_recs.parquet as the publisher
does, then times ``validate_publication`` (the SQL checks and both GX suites, Data Docs
included; Great Expectations' own import is done before the clock starts) and reports its
wall time and the process's peak RSS before and after it. The
category cap is set to 1.0: the cap is not what is measured, and random categories would
trip it.

The same script measures the code before the checks moved to SQL (where the checkpoint took the
lists as a pandas frame): run it with PYTHONPATH pointing at that commit's tree; the function's
first parameter name says which input it wants.
"""

from __future__ import annotations

import argparse
import inspect
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def peak_rss_mib() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def generate(n_users: int, top_n: int, n_items: int, seed: int = 0):
    """Lists of distinct items per user (an arithmetic walk modulo a prime item count), catalog, purchases."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, n_items, n_users)
    step = rng.integers(1, n_items, n_users)  # n_items prime: every step visits distinct items
    ranks = np.arange(1, top_n + 1)
    item_index = (start[:, None] + ranks[None, :] * step[:, None]) % n_items
    user_ids = np.char.add("u", np.arange(n_users).astype(str)).astype(object)
    item_ids = np.char.add("i", np.arange(n_items).astype(str)).astype(object)
    lists = pd.DataFrame(
        {
            "user_id": np.repeat(user_ids, top_n),
            "item_id": item_ids[item_index.ravel()],
            "rank": np.tile(ranks, n_users).astype(np.int32),
        }
    )
    bought = (start[:, None] - np.arange(1, 21)[None, :] * step[:, None]) % n_items  # walk backwards: not listed
    purchased = pd.DataFrame({"user_id": np.repeat(user_ids, 20), "item_id": item_ids[bought.ravel()]})
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "category": [f"cat_{c:02d}" for c in rng.integers(0, 50, n_items)],
            "in_stock": True,
            "is_blocked": False,
        }
    )
    return lists, items, purchased


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("users", type=int)
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--items", type=int, default=20011, help="a prime, so each user's walk is distinct")
    args = parser.parse_args()

    from pipelines.settings import Settings
    from pipelines.validation.checkpoints import validate_publication

    with tempfile.TemporaryDirectory(prefix="recforge-pubcheck-") as tmp:
        settings = Settings(home=Path(tmp), publish_top_n=args.top_n, category_cap=1.0)
        settings.ensure_dirs()
        lists, items, purchased = generate(args.users, args.top_n, args.items)
        path = Path(tmp) / "user_recs.parquet"
        pq.write_table(pa.Table.from_pandas(lists, preserve_index=False), path)
        takes_frame = next(iter(list(inspect.signature(validate_publication).parameters)[1:2])) == "user_recs"
        if not takes_frame:
            del lists  # the SQL checks read the file; the publisher has no other copy to keep
        import great_expectations  # noqa: F401  (its import, ~5 s, is paid once per process either way)

        before = peak_rss_mib()
        started = time.perf_counter()
        report = validate_publication(settings, lists if takes_frame else path, items, purchased, "bench")
        seconds = time.perf_counter() - started
    result = {
        "users": args.users, "top_n": args.top_n, "list_rows": args.users * args.top_n,
        "input": "pandas frame" if takes_frame else "parquet file", "seconds": round(seconds, 2),
        "peak_rss_mib_before": before, "peak_rss_mib_after": peak_rss_mib(), "passed": report.passed,
        "rows_validated": report.rows,
    }  # fmt: skip
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
