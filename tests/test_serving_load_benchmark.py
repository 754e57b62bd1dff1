"""The serving benchmark's reading of a swap under fixed-rate load (benchmarks/serving_load.py).

The run itself needs the server, a 1M-user publication and hey; what it concludes from hey's
per-request CSV is checked here on a few hand-made rows.
"""

import pytest

from tests.conftest import benchmark_script

HEADER = "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset"


@pytest.fixture(scope="module")
def bench():
    return benchmark_script("serving_load")


def hey_csv(rows: list[tuple[float, int, float]]) -> str:
    """(latency s, status, offset s) rows as hey -o csv prints them."""
    return "\n".join(
        [HEADER, *(f"{lat:.4f},0.0001,0.0000,0.0000,{lat:.4f},0.0000,{code},{at:.4f}" for lat, code, at in rows)]
    )


def test_only_requests_started_between_switch_and_pickup_count_as_during_the_swap(bench):
    before = [(0.001, 200, 0.1 * n) for n in range(40)]  # 0.0-3.9 s
    during = [(0.010 + 0.001 * n, 200, 5.0 + 0.1 * n) for n in range(20)] + [(0.050, 0, 6.05)]  # one failed
    after = [(0.001, 200, 8.0 + 0.1 * n) for n in range(40)]
    summary = bench.swap_summary(hey_csv(before + during + after), seconds=12, switched_at=5.0, picked_up_at=7.0)
    assert summary["pickup_seconds"] == 2.0
    assert summary["requests"] == 101 and summary["non_200"] == 1 and summary["status_codes"] == {0: 1, 200: 100}
    assert summary["during_swap_requests"] == 21 and summary["during_swap_non_200"] == 1
    assert summary["during_swap_max_ms"] == 50.0
    assert summary["during_swap_p50_ms"] == 20.0  # the median of 10..29 ms and 50 ms
    assert summary["p50_ms"] == 1.0  # the whole run is mostly the quiet requests


def test_without_a_pickup_the_swap_lasts_to_the_end_of_the_run(bench):
    rows = [(0.001, 200, 1.0), (0.002, 200, 6.0), (0.003, 200, 11.0)]
    summary = bench.swap_summary(hey_csv(rows), seconds=12, switched_at=5.0, picked_up_at=None)
    assert summary["pickup_seconds"] is None and summary["picked_up_at_s"] is None
    assert summary["during_swap_requests"] == 2


def test_output_that_is_not_heys_csv_is_refused(bench):
    with pytest.raises(ValueError, match="not hey's CSV output"):
        bench.swap_summary("Summary:\n  Total: 1.0 secs\n", seconds=1, switched_at=0.0, picked_up_at=None)
