"""Drive the real server over loopback with wrk (peak throughput) and hey -q (latency at a fixed rate).

    python benchmarks/serving_publication.py --home /tmp/rf-bench --fresh     # 1M users x 100, 100k items
    python benchmarks/serving_load.py --home /tmp/rf-bench --out benchmarks/results/serving_load.json

One run measures, against the same server process: the no-op endpoint ``/v1/noop`` (the
ceiling: the same routing, middleware and metrics, no work), user recommendations (random
users over the whole publication via a wrk Lua script), the same with an ``exclude`` parameter
(which always takes the Python answer path) and similar items (random items); then ``hey -q``
at a fixed total rate for latency percentiles; then a wrk run on recommendations during which a
new publication is switched live, counting non-200 answers; then ``hey -q`` at the fixed rate
while another new publication is switched live: how long the running server took to serve it
(``/readyz`` polled), every answer's status, and the latency percentiles of the requests sent
between the switch and the moment the new version answered (hey's per-request CSV).
``--swap-only`` runs that last step alone (issue 20's target: picked up within 60 s, zero non-200,
p99 under 20 ms during the swap, at 500 requests/s).

Every endpoint is warmed up first (a few seconds of wrk, not recorded). No-op and
recommendations then alternate for ``--rounds`` rounds, and the ratio is the median of the
per-round ratios: on a shared virtual machine two consecutive runs of the same endpoint differ
by up to 20%, and alternating keeps each pair under the same conditions. Load average is
recorded before each step.

Targets (issue 8): recommendations >= 70% of the no-op throughput, p99 < 10 ms at 500 req/s;
similar items p99 < 20 ms; zero non-200 answers across a swap.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_publication import clone_version  # noqa: E402

from pipelines.publication.publish import current_version, switch_current  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


# With --pin, the server runs on CPU 0 and the load generators on CPU 1, so that neither steals
# the other's core; both endpoints are measured under the same placement.
SERVER_CPU, CLIENT_CPU = "0", "1"
HEY_WORKERS = 10  # hey's connections for a fixed-rate run (each sends rate / HEY_WORKERS requests/s)
PINNING = {"server": [], "client": []}


def start_server(
    home: Path, port: int, log_path: Path, reload_interval_seconds: float
) -> tuple[subprocess.Popen, float]:
    env = {
        **os.environ,
        "RECFORGE_HOME": str(home),
        "RECFORGE_PORT": str(port),
        "RECFORGE_RELOAD_INTERVAL_SECONDS": str(reload_interval_seconds),
        "PYTHONPATH": str(REPO),
    }
    started = time.perf_counter()
    server = subprocess.Popen(
        [*PINNING["server"], sys.executable, "-m", "serving"],
        env=env,
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 600
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}; see {log_path}")
        try:
            if get_json(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return server, time.perf_counter() - started
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("the server was not ready within 600 s")
        time.sleep(0.2)


def lua_script(kind: str, users: int, items: int, k: int) -> str:
    if kind == "noop":
        return 'request = function() return wrk.format("GET", "/v1/noop") end\n'
    if kind == "recommendations":
        width, count, path = len(str(users)), users, "/v1/users/u%0{w}d/recommendations?k={k}"
    elif kind == "recommendations_exclude":
        width, count, path = len(str(users)), users, "/v1/users/u%0{w}d/recommendations?k={k}&exclude=i000001"
    else:
        width, count, path = len(str(items)), items, "/v1/items/i%0{w}d/similar?k={k}"
    path = path.format(w=width, k=k)
    return (
        "math.randomseed(42)\n"
        f'request = function() return wrk.format("GET", string.format("{path}", math.random(0, {count - 1}))) end\n'
    )


def parse_wrk(text: str) -> dict:
    def number(pattern: str, default: float = 0.0) -> float:
        match = re.search(pattern, text)
        return float(match.group(1)) if match else default

    def latency_ms(label: str) -> float | None:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "requests_per_second": number(r"Requests/sec:\s+([\d.]+)"),
        "requests": int(number(r"(\d+) requests in")),
        "non_2xx": int(number(r"Non-2xx or 3xx responses: (\d+)")),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
    }


def server_cpu_seconds(pid: int) -> float:
    """User + system CPU the server process has used: per request, a figure that shared cores distort less."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: str, seconds: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [*PINNING["client"], "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
            + ["-s", handle.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    return parse_wrk(out)


def hey_command(url: str, rate: int, seconds: int, workers: int, *options: str) -> list[str]:
    """hey for `seconds` at `rate` requests/s in total: its -q is per worker, `workers` x `rate/workers`."""
    return [
        *PINNING["client"],
        "hey",
        "-z",
        f"{seconds}s",
        "-c",
        str(workers),
        "-q",
        str(rate // workers),
        *options,
        url,
    ]


def run_hey(url: str, rate: int, seconds: int, workers: int) -> dict:
    """Requests/s, latency percentiles and status codes of one hey run at a fixed rate."""
    out = subprocess.run(
        hey_command(url, rate, seconds, workers),
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def percentile(p: int) -> float | None:
        match = re.search(rf"{p}% in ([\d.]+) secs", out)
        return round(float(match.group(1)) * 1000, 3) if match else None

    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "requests_per_second": float(rps.group(1)) if rps else 0.0,
        "p50_ms": percentile(50),
        "p90_ms": percentile(90),
        "p99_ms": percentile(99),
        "status_codes": codes,
    }


def percentile_ms(latencies_s: np.ndarray, p: float) -> float | None:
    return round(float(np.percentile(latencies_s, p)) * 1000, 3) if len(latencies_s) else None


def swap_at_rate(base: str, root: Path, url: str, rate: int, seconds: int, switch_after: float) -> dict:
    """`hey -q` at `rate` requests/s in total while a new version (same files, own manifest) goes live.

    The version is switched `switch_after` seconds into the run, as `recforge publish` switches it;
    `/readyz` is polled until the server answers with it. "During the swap" is every request hey
    started between the switch and that moment: its latencies are what a client saw while the
    server loaded and verified the new version in the background.
    """
    new_version = clone_version(root, current_version(root))
    hey = subprocess.Popen(
        hey_command(url, rate, seconds, HEY_WORKERS, "-o", "csv"),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = time.monotonic()
    time.sleep(switch_after)
    switch_current(root, new_version)
    switched_at = time.monotonic() - started
    picked_up_at = None
    while picked_up_at is None and time.monotonic() - started < seconds:
        if get_json(f"{base}/readyz")[1].get("version") == new_version:
            picked_up_at = time.monotonic() - started
        else:
            time.sleep(0.1)
    out, _ = hey.communicate()
    if hey.returncode != 0:
        raise RuntimeError(f"hey exited with {hey.returncode}")
    return {"rate": rate, "new_version": new_version, **swap_summary(out, seconds, switched_at, picked_up_at)}


def swap_summary(hey_csv: str, seconds: float, switched_at: float, picked_up_at: float | None) -> dict:
    """Status codes and latencies from hey's per-request CSV, over the run and over the swap.

    A request is "during the swap" when hey started it (its `offset`) between the switch and the
    pickup; with no pickup, until the run's end. A failed request (hey writes status 0) is non-200.
    """
    header, *lines = hey_csv.splitlines()
    columns = header.split(",")
    if columns[0] != "response-time" or "status-code" not in columns or "offset" not in columns:
        raise ValueError(f"not hey's CSV output: header {header!r}")
    rows = [line.split(",") for line in lines if line.strip()]
    at = {name: columns.index(name) for name in ("response-time", "status-code", "offset")}
    latency = np.array([float(r[at["response-time"]]) for r in rows])
    status = np.array([int(r[at["status-code"]]) for r in rows], dtype=np.int64)
    offset = np.array([float(r[at["offset"]]) for r in rows])
    during = (offset >= switched_at) & (offset <= (seconds if picked_up_at is None else picked_up_at))
    codes, counts = np.unique(status, return_counts=True)
    return {
        "seconds": seconds,
        "switched_at_s": round(switched_at, 2),
        "picked_up_at_s": None if picked_up_at is None else round(picked_up_at, 2),
        "pickup_seconds": None if picked_up_at is None else round(picked_up_at - switched_at, 2),
        "requests": len(rows),
        "requests_per_second": round(len(rows) / seconds, 1),
        "status_codes": {int(c): int(n) for c, n in zip(codes, counts, strict=True)},
        "non_200": int((status != 200).sum()),
        "p50_ms": percentile_ms(latency, 50),
        "p99_ms": percentile_ms(latency, 99),
        "during_swap_requests": int(during.sum()),
        "during_swap_non_200": int((status[during] != 200).sum()),
        "during_swap_p50_ms": percentile_ms(latency[during], 50),
        "during_swap_p99_ms": percentile_ms(latency[during], 99),
        "during_swap_max_ms": percentile_ms(latency[during], 100),
    }


def throughput_summary(runs: list[dict]) -> dict:
    """Median requests/s and CPU per request of each wrk endpoint, and the median per-round ratio to the no-op."""
    wrk = [r for r in runs if r["tool"] == "wrk"]
    summary = {}
    for endpoint in dict.fromkeys(r["endpoint"] for r in wrk):
        rows = [r for r in wrk if r["endpoint"] == endpoint]
        summary[f"{endpoint}_median_rps"] = float(np.median([r["requests_per_second"] for r in rows]))
        summary[f"{endpoint}_median_cpu_us"] = float(np.median([r["server_cpu_us_per_request"] for r in rows]))
    rounds = sorted({r["round"] for r in wrk if r["endpoint"] == "noop"})
    by = {(r["endpoint"], r["round"]): r for r in wrk}
    rps_ratios = [
        by["recommendations", n]["requests_per_second"] / by["noop", n]["requests_per_second"] for n in rounds
    ]
    cpu_ratios = [
        by["noop", n]["server_cpu_us_per_request"] / by["recommendations", n]["server_cpu_us_per_request"]
        for n in rounds
    ]
    summary["recommendations_share_of_noop_per_round"] = [round(x, 3) for x in rps_ratios]
    summary["recommendations_share_of_noop"] = round(float(np.median(rps_ratios)), 3)
    summary["noop_cpu_share_of_recommendations_cpu"] = round(float(np.median(cpu_ratios)), 3)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, default=8731)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=500, help="total requests per second for hey -q")
    parser.add_argument("--hey-seconds", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="alternating no-op / recommendations wrk runs")
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not pin the server to CPU 0 and wrk/hey to CPU 1"
    )
    parser.add_argument("--warmup", type=int, default=5, help="seconds of unrecorded wrk per endpoint first")
    parser.add_argument(
        "--reload-interval", type=float, default=2.0,
        help="the server's RECFORGE_RELOAD_INTERVAL_SECONDS (default 2.0, the server's own default)",
    )  # fmt: skip
    parser.add_argument("--swap-seconds", type=int, default=75, help="length of the fixed-rate swap run")
    parser.add_argument("--swap-only", action="store_true", help="only the fixed-rate swap (after a warm-up)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install -y wrk hey")

    if args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PINNING.update(server=["taskset", "-c", SERVER_CPU], client=["taskset", "-c", CLIENT_CPU])
    root = args.home / "published"
    log_path = Path(tempfile.gettempdir()) / "recforge-serving-bench.log"
    server, ready_seconds = start_server(args.home, args.port, log_path, args.reload_interval)
    base = f"http://127.0.0.1:{args.port}"
    results: dict = {
        "pinned": bool(PINNING["server"]),
        "ready_seconds": round(ready_seconds, 1),
        "reload_interval_seconds": args.reload_interval,
        "readyz": get_json(f"{base}/readyz")[1],
        "runs": [],
    }
    users, items = results["readyz"]["users"], results["readyz"]["items"]
    try:
        time.sleep(3)  # let the loader's garbage settle before measuring
        for kind in ("noop", "recommendations", "recommendations_exclude", "similar"):
            run_wrk(base, lua_script(kind, users, items, args.k), args.warmup, args.connections)
        if not args.swap_only:
            throughput_runs(args, base, root, server, users, items, results)
        url = f"{base}/v1/users/u{users // 2:0{len(str(users))}d}/recommendations?k={args.k}"
        row = {"tool": f"hey -q ({args.rate}/s) + swap", "endpoint": "recommendations", "load_average": os.getloadavg()}
        row.update(swap_at_rate(base, root, url, args.rate, args.swap_seconds, switch_after=5))
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
    finally:
        server.terminate()
        server.wait(timeout=30)

    if not args.swap_only:
        results.update(throughput_summary(results["runs"]))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


def throughput_runs(args, base: str, root: Path, server: subprocess.Popen, users: int, items: int, results: dict):
    """wrk's alternating no-op / recommendations rounds, the slower paths, hey at a fixed rate, a swap under wrk."""

    def measured(kind: str, round_number: int) -> dict:
        row = {"tool": "wrk", "endpoint": kind, "round": round_number, "load_average": os.getloadavg()}
        cpu_before = server_cpu_seconds(server.pid)
        row.update(run_wrk(base, lua_script(kind, users, items, args.k), args.seconds, args.connections))
        row["server_cpu_us_per_request"] = round(
            (server_cpu_seconds(server.pid) - cpu_before) / max(row["requests"], 1) * 1e6, 1
        )
        print(json.dumps(row), flush=True)
        results["runs"].append(row)
        return row

    for round_number in range(1, args.rounds + 1):
        order = ("noop", "recommendations") if round_number % 2 else ("recommendations", "noop")
        for kind in order:  # alternating which goes first cancels a drift within the run
            measured(kind, round_number)
    for kind in ("recommendations_exclude", "similar"):
        measured(kind, 1)
    fixed = {
        "noop": f"{base}/v1/noop",
        "recommendations": f"{base}/v1/users/u{users // 2:0{len(str(users))}d}/recommendations?k={args.k}",
        "similar": f"{base}/v1/items/i{items // 2:0{len(str(items))}d}/similar?k={args.k}",
    }
    for kind, url in fixed.items():
        row = {"tool": f"hey -q ({args.rate}/s)", "endpoint": kind, "load_average": os.getloadavg()}
        row.update(run_hey(url, args.rate, args.hey_seconds, HEY_WORKERS))
        print(json.dumps(row), flush=True)
        results["runs"].append(row)

    # A new publication goes live in the middle of a wrk run on recommendations.
    before = current_version(root)
    swap = {"tool": "wrk + swap", "endpoint": "recommendations", "load_average": os.getloadavg()}
    new_version = clone_version(root, before)

    def switch_later() -> None:
        time.sleep(2)
        switch_current(root, new_version)

    import threading

    switcher = threading.Thread(target=switch_later)
    switcher.start()
    swap.update(
        run_wrk(base, lua_script("recommendations", users, items, args.k), max(args.seconds, 40), args.connections)
    )
    switcher.join()
    swap["live_version_after"] = get_json(f"{base}/readyz")[1]["version"]
    swap["swapped"] = swap["live_version_after"] == new_version
    print(json.dumps(swap), flush=True)
    results["runs"].append(swap)


if __name__ == "__main__":
    main()
