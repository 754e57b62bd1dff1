"""Acknowledged events per second of ``POST /v1/events`` on one server core, with durability on.

    python benchmarks/collector_load.py --out benchmarks/results/collector_load.json

Two real ``python -m serving`` processes on an empty home, each pinned to CPU 0 (taskset) and
loaded one at a time from a client pinned to CPU 1:
- ``durable``: the default collector (segment files, group commit, fdatasync before every answer);
- ``no_fsync``: the same with ``RECFORGE_COLLECTOR_FSYNC=false`` (acknowledged after ``write()``):
  the reference that shows what durability costs.
The durable server's ``GET /v1/noop`` is measured too (requests/s through the same stack, no work).
Each round runs the three in turn for ``--seconds``; the figures are the medians over
``--rounds`` rounds, with their spread (min..max), and the median of the per-round ratios (both
servers measured under the same conditions of this shared machine). Every request carries
``--batch`` events (valid, unique ids) and must be answered 200 with all of them accepted; the
segments are counted at the end and must hold every acknowledged event.

The client is a small asyncio HTTP/1.1 client (keep-alive, ``--connections`` connections, each
with one request in flight): at 100 events per request it needs a few hundred requests a second,
well within one core.

Target (issue 17): at least 20,000 acknowledged events/s on one server core with durability on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipelines.runtime.processes import free_port  # noqa: E402
from serving.collector.segments import closed_segments  # noqa: E402

KEY = "benchmark-app-key-0123456789"
SERVER_CPU, CLIENT_CPU = "0", "1"


def start_server(home: Path, port: int, fsync: bool, log: Path, pin: bool) -> subprocess.Popen:
    env = {
        **os.environ,
        "RECFORGE_HOME": str(home),
        "RECFORGE_PORT": str(port),
        "RECFORGE_COLLECTOR_APP_KEY": KEY,
        "RECFORGE_COLLECTOR_FSYNC": str(fsync).lower(),
        "PYTHONPATH": str(REPO),
    }
    command = [*(["taskset", "-c", SERVER_CPU] if pin else []), sys.executable, "-m", "serving"]
    server = subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the server did not start; see {log}") from None
            time.sleep(0.1)


def server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event_requests(batch: int, count: int, prefix: str) -> list[bytes]:
    """`count` distinct POST requests of `batch` events each, stamped now (inside the time window)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    requests = []
    for r in range(count):
        events = [
            {
                "event_id": f"{prefix}-{r}-{i}",
                "user_id": f"u{(r * batch + i) % 5000:06d}",
                "item_id": f"i{(r * 7 + i) % 900:06d}",
                "event_type": ("view", "click", "add_to_cart", "purchase")[i % 4],
                "event_ts": now,
                "session_id": f"s{r % 300}",
                "context": {"device": "mobile"},
            }
            for i in range(batch)
        ]
        body = orjson.dumps(events)
        head = (
            "POST /v1/events HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {KEY}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


NOOP = b"GET /v1/noop HTTP/1.1\r\nhost: bench\r\n\r\n"


async def load(port: int, requests: list[bytes], seconds: float, connections: int) -> dict:
    """Send `requests` round-robin over keep-alive connections for `seconds`; count 200 answers."""
    done = {"ok": 0, "bad": 0, "latencies": []}
    stop_at = time.monotonic() + seconds

    async def one_connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = offset
        while time.monotonic() < stop_at:
            sent = time.perf_counter()
            writer.write(requests[n % len(requests)])
            n += connections
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
            )
            await reader.readexactly(length)
            done["latencies"].append(time.perf_counter() - sent)
            done["ok" if head.startswith(b"HTTP/1.1 200") else "bad"] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    latencies = sorted(done["latencies"])
    return {
        "requests_per_second": done["ok"] / elapsed,
        "requests_ok": done["ok"],
        "requests_bad": done["bad"],
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
        "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2) if latencies else None,
    }


def measure(name: str, server: subprocess.Popen, port: int, requests, seconds, connections, batch) -> dict:
    cpu = server_cpu_seconds(server.pid)
    result = asyncio.run(load(port, requests, seconds, connections))
    cpu = server_cpu_seconds(server.pid) - cpu
    events = result["requests_ok"] * batch
    result.update(
        endpoint=name,
        events_per_second=round(result["requests_per_second"] * batch, 1) if batch else None,
        server_cpu_seconds=round(cpu, 2),
        events_per_server_cpu_second=round(events / cpu, 1) if batch and cpu else None,
        requests_per_second=round(result["requests_per_second"], 1),
        load_average=os.getloadavg()[0],
    )
    return result


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1), "max": round(max(values), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-pin", action="store_true", help="do not pin the servers and the client to CPUs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    pin = not args.no_pin
    if pin:
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    work = Path(tempfile.mkdtemp(prefix="collector-bench-"))
    ports = {"durable": free_port(), "no_fsync": free_port()}
    servers = {
        name: start_server(work / name, ports[name], name == "durable", work / f"{name}.log", pin) for name in ports
    }
    runs = []
    try:
        requests = {name: event_requests(args.batch, 200, name) for name in ports}
        for name in ports:  # warm-up, not recorded
            measure(name, servers[name], ports[name], requests[name], 1.0, args.connections, args.batch)
        for round_number in range(args.rounds):
            for name in ("noop", "durable", "no_fsync"):
                server_name = "durable" if name == "noop" else name
                batch = 0 if name == "noop" else args.batch
                result = measure(
                    name, servers[server_name], ports[server_name], [NOOP] if name == "noop" else requests[name],
                    args.seconds, args.connections, batch,
                )  # fmt: skip
                result["round"] = round_number
                runs.append(result)
                print(json.dumps(result), flush=True)
                assert result["requests_bad"] == 0, f"{name}: {result['requests_bad']} answers were not 200"
        acknowledged = {
            name: sum(r["requests_ok"] for r in runs if r["endpoint"] == name) * args.batch for name in ports
        }
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=30)
    stored = {
        name: sum(path.read_bytes().count(b"\n") for path in closed_segments(work / name / "landing" / "stream"))
        for name in ports
    }
    by = {(r["endpoint"], r["round"]): r for r in runs}
    rounds = range(args.rounds)
    summary = {
        "durable_events_per_second": spread([by["durable", n]["events_per_second"] for n in rounds]),
        "no_fsync_events_per_second": spread([by["no_fsync", n]["events_per_second"] for n in rounds]),
        "durable_share_of_no_fsync": round(
            statistics.median(
                by["durable", n]["events_per_second"] / by["no_fsync", n]["events_per_second"] for n in rounds
            ),
            3,
        ),
        "durable_events_per_server_cpu_second": spread(
            [by["durable", n]["events_per_server_cpu_second"] for n in rounds]
        ),
        "noop_requests_per_second": spread([by["noop", n]["requests_per_second"] for n in rounds]),
        "durable_requests_per_second": spread([by["durable", n]["requests_per_second"] for n in rounds]),
        "durable_p99_ms": spread([by["durable", n]["p99_ms"] for n in rounds]),
        "acknowledged_events": acknowledged,
        "events_in_closed_segments": stored,  # warm-up events included: at least the acknowledged ones
        "target_events_per_second": 20000,
    }
    summary["meets_target"] = summary["durable_events_per_second"]["median"] >= 20000
    assert all(stored[name] >= acknowledged[name] for name in ports), f"lost events: {stored} < {acknowledged}"
    report = {
        "settings": {**vars(args), "out": str(args.out) if args.out else None, "pinned": pin},
        "host": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg()},
        "summary": summary,
        "runs": runs,
    }
    durable = summary["durable_events_per_second"]
    print(
        f"durable: {durable['median']:.0f} events/s acknowledged on one core "
        f"(spread {durable['min']:.0f}..{durable['max']:.0f}), "
        f"{summary['durable_share_of_no_fsync']:.2f}x of the same server without fsync; "
        f"every acknowledged event in the segments: {stored}"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
