"""What the paired A/B benchmarks share: the median ratio with its range, and the results file they append to.

A pair is one run of the candidate and one of the reference, back to back, so load on this shared
machine falls on both; the figure is the median of the per-pair ratios, with the smallest and largest.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def ratio_summary(pairs: list[dict], label: str) -> dict:
    """Median, min and max of the pairs' ``ratio``; prints them under ``label``."""
    ratios = [pair["ratio"] for pair in pairs]
    summary = {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios)}
    print(
        f"{label}: median {summary['median_ratio']:.3f} ({summary['min_ratio']:.3f}-{summary['max_ratio']:.3f}) "
        f"over {len(ratios)} pairs"
    )
    return summary


def median_range(values: list[float], digits: int = 2) -> str:
    """``median (min-max)`` of `values`, to `digits` decimals: how a benchmark prints a repeated figure."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def append_result(name: str, record: dict) -> Path:
    """Append ``record`` to benchmarks/results/<name>.json (a list, oldest first)."""
    path = RESULTS_DIR / f"{name}.json"
    history = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*history, record], indent=2) + "\n")
    return path
