"""Recommendations throughput with the impression log on against the same server code with it off.

    python benchmarks/serving_publication.py --home /tmp/rf-imp-bench --users 100000 --items 20000 --fresh
    python benchmarks/impressions_load.py --home /tmp/rf-imp-bench --out benchmarks/results/impressions_load.json

Two servers run side by side on one publication, both pinned to CPU 0 (wrk on CPU 1), one with
``RECFORGE_IMPRESSIONS_SINK=off`` and one with the sink under test (``files`` by default, or
``redis``). After a warm-up of each, wrk drives random known users' recommendations (the C path,
as in serving_load.py) at one server, then the other, alternating which goes first, for
``--rounds`` rounds; the figure is the median of the per-round ratios logging-on / logging-off
(requests per second, and server CPU per request), with the spread of the rounds. An idle
server costs the other nothing but its watcher's wake-ups, so the pair shares the core fairly.

At the end the logging server is stopped (which flushes and seals its log) and the slates it
wrote are counted against the requests it answered and the drops its /metrics reported: a fast
run that silently dropped its impressions would not count as a pass.

Target (issue 16): with logging on, recommendations throughput >= 90% of logging off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_load import (  # noqa: E402
    CLIENT_CPU,
    PINNING,
    SERVER_CPU,
    get_json,
    lua_script,
    run_wrk,
    server_cpu_seconds,
    start_server,
)

from pipelines.runtime.processes import free_port  # noqa: E402
from serving.impressions.format import STREAM_FIELD, from_ipc_stream, landing_dir  # noqa: E402


def metric(base: str, name: str) -> float:
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def logged_slates(home: Path) -> int:
    import pyarrow.parquet as pq

    files = sorted(landing_dir(home).glob("date=*/*.parquet"))
    return sum(pq.read_metadata(f).num_rows for f in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--sink", choices=["files", "redis"], default="files")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument(
        "--interval-seconds", type=int, default=60,
        help="the logging server's file interval: short, so that sealing (Parquet) happens inside the measured rounds",
    )  # fmt: skip
    parser.add_argument("--ports", type=int, nargs=2, help="default: two free ports")
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument(
        "--aa", action="store_true", help="an A/A run: both servers with logging off (the method's noise floor)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PINNING.update(server=["taskset", "-c", SERVER_CPU], client=["taskset", "-c", CLIENT_CPU])
    shutil.rmtree(landing_dir(args.home), ignore_errors=True)
    if args.sink == "redis":
        import redis

        redis.Redis.from_url(args.redis_url).delete("recforge:impressions")

    servers, bases = {}, {}
    ports = args.ports or [free_port(), free_port()]
    for name, port, sink in (("off", ports[0], "off"), ("on", ports[1], "off" if args.aa else args.sink)):
        os.environ.update(
            RECFORGE_IMPRESSIONS_SINK=sink,
            RECFORGE_IMPRESSIONS_REDIS_URL=args.redis_url,
            RECFORGE_IMPRESSIONS_INTERVAL_SECONDS=str(args.interval_seconds),
        )
        log_path = Path(tempfile.gettempdir()) / f"recforge-impressions-bench-{name}.log"
        servers[name], _ = start_server(args.home, port, log_path)
        bases[name] = f"http://127.0.0.1:{port}"
    time.sleep(3)  # a server that lost its port to another process exits: never measure someone else's
    for name, server in servers.items():
        if server.poll() is not None:
            raise SystemExit(f"the logging-{name} server exited ({server.returncode}); see its log in /tmp")
    readyz = get_json(f"{bases['on']}/readyz")[1]
    script = lua_script("recommendations", readyz["users"], readyz["items"], args.k)
    results: dict = {
        "sink": "off (A/A)" if args.aa else args.sink,
        "interval_seconds": args.interval_seconds,
        "pinned": bool(PINNING["server"]),
        "readyz": readyz,
        "runs": [],
    }
    answered = 0
    try:
        for name in ("off", "on"):
            run_wrk(bases[name], script, args.warmup, args.connections)
        answered_before = metric(bases["on"], 'recforge_requests_total{endpoint="/v1/users/{user_id}/recommendations"')
        for round_number in range(1, args.rounds + 1):
            order = ("off", "on") if round_number % 2 else ("on", "off")
            for name in order:
                row = {"logging": name, "round": round_number, "load_average": os.getloadavg()}
                cpu_before = server_cpu_seconds(servers[name].pid)
                row.update(run_wrk(bases[name], script, args.seconds, args.connections))
                row["server_cpu_us_per_request"] = round(
                    (server_cpu_seconds(servers[name].pid) - cpu_before) / max(row["requests"], 1) * 1e6, 1
                )
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
        answered = metric(bases["on"], 'recforge_requests_total{endpoint="/v1/users/{user_id}/recommendations"')
        answered -= answered_before
        results["dropped"] = metric(bases["on"], "recforge_impressions_dropped_total")
        total_answered = metric(bases["on"], 'recforge_requests_total{endpoint="/v1/users/{user_id}/recommendations"')
    finally:
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.wait(timeout=120)

    by = {(r["logging"], r["round"]): r for r in results["runs"]}
    rounds = range(1, args.rounds + 1)
    rps = [by["on", n]["requests_per_second"] / by["off", n]["requests_per_second"] for n in rounds]
    cpu = [by["off", n]["server_cpu_us_per_request"] / by["on", n]["server_cpu_us_per_request"] for n in rounds]
    results.update(
        {
            "off_median_rps": float(np.median([by["off", n]["requests_per_second"] for n in rounds])),
            "on_median_rps": float(np.median([by["on", n]["requests_per_second"] for n in rounds])),
            "off_median_cpu_us": float(np.median([by["off", n]["server_cpu_us_per_request"] for n in rounds])),
            "on_median_cpu_us": float(np.median([by["on", n]["server_cpu_us_per_request"] for n in rounds])),
            "on_share_of_off_per_round": [round(x, 3) for x in rps],
            "on_share_of_off": round(float(np.median(rps)), 3),
            "on_share_of_off_spread": [round(min(rps), 3), round(max(rps), 3)],
            "cpu_share_median": round(float(np.median(cpu)), 3),
            "measured_requests_on": int(answered),
            "requests_on_total": int(total_answered),
        }
    )
    if args.aa:
        pass
    elif args.sink == "files":
        results["slates_logged"] = logged_slates(args.home)
        results["files"] = len(list(landing_dir(args.home).glob("date=*/*.parquet")))
    else:
        import redis

        entries = redis.Redis.from_url(args.redis_url).xrange("recforge:impressions")
        results["stream_entries"] = len(entries)
        results["slates_logged"] = sum(from_ipc_stream(f[STREAM_FIELD.encode()]).num_rows for _, f in entries)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
