"""Session-aware answers under load: event to answer, session-aware latency, and the no-session users' cost.

    python benchmarks/serving_publication.py --home /tmp/rf-session-bench --users 200000 --items 20000 --fresh
    python benchmarks/session_load.py --home /tmp/rf-session-bench --out benchmarks/results/session_load.json

One server process (``python -m serving``, the collector on, the embedded default), one run:

1. Event to answer: ``--events`` times, ``POST /v1/events`` one click of a new visitor (durable:
   fsync on), then at once ``GET`` the visitor's recommendations until the answer names the
   clicked item as a reason (``session:<item>``); the time from the collector's acknowledgement
   (its response read) to that answer, p50 / p99, and how many GETs it took.
2. ``--session-users`` users of the publication get a few session events each; one request at a
   time alternating a session-aware user and one without a session (each answer's own latency);
   ``hey -q`` at
   ``--rate`` requests/s on one of them (a session-aware answer: FAISS neighbours blended into the
   list), and for reference on a user without a session (the C fast path), one after the other.
3. ``wrk`` on random users of the publication (none of them has a session, while the session store
   holds ``--session-users`` users) against ``/v1/noop``, alternating for ``--rounds`` rounds; the
   server's CPU time per request from ``/proc``, and the median of the per-round ratios
   (recommendations / no-op), as serving_load.py measures it.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving_load  # noqa: E402
from serving_load import PINNING, get_json, lua_script, run_hey, run_wrk, server_cpu_seconds  # noqa: E402

KEY = "session-benchmark-key-0123456789"


def stamp() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Client:
    """One keep-alive HTTP connection (the app's and the collector's sides each hold one)."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post_events(self, events: list[dict]) -> None:
        body = json.dumps(events).encode()
        headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
        self.connection.request("POST", "/v1/events", body, headers)
        answer = self.connection.getresponse()
        text = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST /v1/events answered {answer.status}: {text[:200]!r}")

    def recommendations(self, user: str) -> dict:
        self.connection.request("GET", f"/v1/users/{user}/recommendations?k=10")
        answer = self.connection.getresponse()
        return json.loads(answer.read())


def event_to_answer(port: int, items: int, events: int) -> dict:
    collector, app = Client(port), Client(port)
    width = len(str(items))
    rng = np.random.default_rng(5)
    seconds, polls = [], []
    for n in range(events):
        item = f"i{int(rng.integers(items)):0{width}d}"
        user = f"visitor-{n}"
        collector.post_events(
            [{"event_id": f"b{n}", "user_id": user, "item_id": item, "event_type": "click", "event_ts": stamp()}]
        )
        acknowledged = time.perf_counter()
        answers = 0
        while not any(entry["reason"] == f"session:{item}" for entry in app.recommendations(user)["items"]):
            answers += 1
            if answers == 1000:
                raise RuntimeError(f"no answer reflected the click of {user} on {item}")
        seconds.append(time.perf_counter() - acknowledged)
        polls.append(answers + 1)
    ms = np.array(seconds) * 1000
    return {
        "events": events,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
        "answers_needed_max": int(max(polls)),
    }


def sequential_latency(port: int, with_session: str, without: str, requests: int) -> dict:
    """One request at a time, alternating the two users: each answer's own time, without queueing."""
    client = Client(port)
    times: dict[str, list[float]] = {"session-aware user": [], "user without a session": []}
    for n in range(requests):
        name, user = ("session-aware user", with_session) if n % 2 else ("user without a session", without)
        started = time.perf_counter()
        client.recommendations(user)
        times[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}
        for name, ms in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8741)
    parser.add_argument("--events", type=int, default=2000, help="event-to-answer measurements")
    parser.add_argument("--session-users", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--hey-seconds", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install -y wrk hey")
    if args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PINNING.update(
            server=["taskset", "-c", serving_load.SERVER_CPU], client=["taskset", "-c", serving_load.CLIENT_CPU]
        )
    os.environ["RECFORGE_COLLECTOR_APP_KEY"] = KEY  # start_server passes the environment on
    log_path = Path(tempfile.gettempdir()) / "recforge-session-bench.log"
    server, _ = serving_load.start_server(args.home, args.port, log_path)
    base = f"http://127.0.0.1:{args.port}"
    readyz = get_json(f"{base}/readyz")[1]
    users, items = readyz["users"], readyz["items"]
    uw, iw = len(str(users)), len(str(items))
    results: dict = {"pinned": bool(PINNING["server"]), "readyz": readyz, "runs": []}
    try:
        time.sleep(2)
        results["event_to_answer"] = event_to_answer(args.port, items, args.events)
        print(json.dumps({"event_to_answer": results["event_to_answer"]}), flush=True)

        # Session users: the first --session-users users of the publication, three clicks each.
        rng = np.random.default_rng(9)
        feeder = Client(args.port)
        for start in range(0, args.session_users, 500):
            feeder.post_events(
                [
                    {
                        "event_id": f"w{u}-{j}",
                        "user_id": f"u{u:0{uw}d}",
                        "item_id": f"i{int(rng.integers(items)):0{iw}d}",
                        "event_type": "view" if j else "click",
                        "event_ts": stamp(),
                    }  # fmt: skip
                    for u in range(start, min(start + 500, args.session_users))
                    for j in range(3)
                ]
            )
        with_session = f"{base}/v1/users/u{0:0{uw}d}/recommendations?k=10"
        without = f"{base}/v1/users/u{users - 1:0{uw}d}/recommendations?k=10"
        sample = get_json(with_session)[1]
        results["session_answer_sample_reasons"] = sorted({entry["reason"] for entry in sample["items"]})
        results["sequential"] = sequential_latency(args.port, f"u{0:0{uw}d}", f"u{users - 1:0{uw}d}", 2000)
        print(json.dumps({"sequential": results["sequential"]}), flush=True)
        for endpoint, url in (("session-aware user", with_session), ("user without a session", without)):
            row = {"tool": f"hey -q ({args.rate}/s)", "endpoint": endpoint, "load_average": os.getloadavg()}
            row.update(run_hey(url, args.rate, args.hey_seconds, workers=10))
            print(json.dumps(row), flush=True)
            results["runs"].append(row)

        # No-session users (random over the publication's users above the session users) against the no-op.
        for kind in ("noop", "recommendations"):
            run_wrk(base, lua_script(kind, users, items, 10), 3, args.connections)
        session_users = args.session_users

        def no_session_script() -> str:
            path = f"/v1/users/u%0{uw}d/recommendations?k=10"
            return (
                "math.randomseed(42)\n"
                f'request = function() return wrk.format("GET", string.format("{path}", '
                f"math.random({session_users}, {users - 1}))) end\n"
            )

        scripts = {"noop": lua_script("noop", users, items, 10), "recommendations": no_session_script()}
        for round_number in range(1, args.rounds + 1):
            order = ("noop", "recommendations") if round_number % 2 else ("recommendations", "noop")
            for kind in order:
                row = {"tool": "wrk", "endpoint": kind, "round": round_number, "load_average": os.getloadavg()}
                cpu_before = server_cpu_seconds(server.pid)
                row.update(run_wrk(base, scripts[kind], args.seconds, args.connections))
                row["server_cpu_us_per_request"] = round(
                    (server_cpu_seconds(server.pid) - cpu_before) / max(row["requests"], 1) * 1e6, 1
                )
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
    finally:
        server.terminate()
        server.wait(timeout=30)

    wrk = {(r["endpoint"], r["round"]): r for r in results["runs"] if r["tool"] == "wrk"}
    rounds = range(1, args.rounds + 1)
    cpu = [wrk["recommendations", n]["server_cpu_us_per_request"] / wrk["noop", n]["server_cpu_us_per_request"]
           for n in rounds]  # fmt: skip
    rps = [wrk["recommendations", n]["requests_per_second"] / wrk["noop", n]["requests_per_second"] for n in rounds]
    results["no_session_cpu_over_noop_per_round"] = [round(x, 3) for x in cpu]
    results["no_session_cpu_over_noop"] = round(float(np.median(cpu)), 3)
    results["no_session_share_of_noop_throughput"] = round(float(np.median(rps)), 3)
    print(json.dumps({k: v for k, v in results.items() if k not in ("runs", "readyz")}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
