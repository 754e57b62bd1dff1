"""Benchmark: a day's ``raw_batch`` checkpoint with GX's page templates cached (the default) and without.

    python benchmarks/checkpoint_templates.py --pairs 5

Simulates and ingests a small log into a temporary home (not timed), runs one checkpoint to warm
imports, then times ``validate_raw_batch`` on alternate landing days in pairs: once with the Jinja
bytecode cache (pipelines/validation/docs_templates.py) and once with it switched off, as every
checkpoint ran before. Prints each pair and the median ratio cached / uncached with its range;
appends the record to benchmarks/results/checkpoint_templates.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paired_results import append_result, ratio_summary  # noqa: E402

from pipelines.ingest import ingest_interval  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from pipelines.simulate import simulate  # noqa: E402
from pipelines.validation import checkpoints, docs_templates  # noqa: E402


def timed_checkpoint(settings: Settings, day: datetime, cached: bool) -> float:
    original = checkpoints.cache_templates
    if not cached:  # every view's environment without a bytecode cache: GX's own behaviour
        checkpoints.cache_templates = lambda directory: docs_templates.cache_templates(None)
    try:
        started = time.perf_counter()
        checkpoints.validate_raw_batch(settings, day, day + timedelta(days=1))
        return time.perf_counter() - started
    finally:
        checkpoints.cache_templates = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    home = Path(tempfile.mkdtemp(prefix="recforge-templates-"))
    days = 2 * args.pairs + 1
    settings = Settings(home=home, sim_users=400, sim_items=160, sim_days=days)
    settings.ensure_dirs()
    simulate(settings)
    start = datetime.combine(settings.sim_start_date, datetime.min.time(), tzinfo=UTC)
    for offset in range(days):
        ingest_interval(settings, start + timedelta(days=offset), start + timedelta(days=offset + 1))
    timed_checkpoint(settings, start, cached=True)  # imports, and the cache's first compile
    pairs = []
    for pair in range(args.pairs):
        cached = timed_checkpoint(settings, start + timedelta(days=2 * pair + 1), cached=True)
        uncached = timed_checkpoint(settings, start + timedelta(days=2 * pair + 2), cached=False)
        pairs.append({"cached": cached, "uncached": uncached, "ratio": cached / uncached})
        print(f"pair {pair + 1}: cached {cached:.2f} s, uncached {uncached:.2f} s, ratio {cached / uncached:.3f}")
    record = {"measured_at": datetime.now(UTC).isoformat(), **ratio_summary(pairs, "cached / uncached"), "pairs": pairs}
    append_result("checkpoint_templates", record)


if __name__ == "__main__":
    main()
