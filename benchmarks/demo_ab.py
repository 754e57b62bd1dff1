"""What the demo A/B adds to `recforge run`: run_demo (traffic through serving in-process, ingest, the
impressions mart, readout) against the full `dbt build` the transform DAG runs, side by side on copies
of one published home, alternating, so both see the same machine load.

    python benchmarks/demo_ab.py PUBLISHED_HOME [--repeats 3] [--visit-rate 3.3]

PUBLISHED_HOME: a home that is trained and published (e.g. the tests' ``published`` fixture's, or
var/ after `make run`); it is copied, never changed. --visit-rate scales the visits so a small home's
users make as many requests as `make run`'s default 1,500 users (about 700 a day).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("home", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--visit-rate", type=float, default=1.0)
    args = parser.parse_args()

    from pipelines.runtime.ab_demo import run_demo
    from pipelines.settings import Settings
    from pipelines.warehouse.transform import build_warehouse

    demo, reference, requests = [], [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            home = Path(folder) / "home"
            shutil.copytree(args.home, home)
            settings = Settings(home=home, traffic_visit_rate=args.visit_rate)
            began = time.perf_counter()
            build_warehouse(settings)
            reference.append(time.perf_counter() - began)
            began = time.perf_counter()
            outcome = run_demo(settings)
            demo.append(time.perf_counter() - began)
            requests.append(int(outcome.traffic.split(" requests")[0].rsplit(" ", 1)[1]))
        print(f"repeat {repeat}: demo {demo[-1]:.1f} s, full dbt build {reference[-1]:.1f} s", flush=True)
    result = {
        "requests": requests,
        "demo_seconds": demo,
        "full_dbt_build_seconds": reference,
        "demo_median": statistics.median(demo),
        "reference_median": statistics.median(reference),
        "ratio_median": statistics.median(d / r for d, r in zip(demo, reference, strict=True)),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
