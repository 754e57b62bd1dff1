"""What the failure log costs: this checkout's server against a reference checkout's, side by side.

    python benchmarks/serving_publication.py --home /tmp/rf-bench --users 200000 --items 20000 --fresh
    git archive <reference> | tar -x -C /tmp/ref && (cd /tmp/ref && python setup.py build_ext --inplace)
    python benchmarks/failure_log_cost.py --home /tmp/rf-bench --reference /tmp/ref --out results/failure_log_cost.json

Both servers run at once on the same publication (idle while the other is measured). For each of
``--rounds`` rounds, wrk drives known users (the C fast path, which never logs) and unknown users
(``x000123``: as long as the published ids, so both servers look them up alike; the fallback, which
this checkout logs as ``unknown_user``) on both servers, each for ``--seconds``, the reference first
in even rounds and second in odd ones. The figure per endpoint is the median of the per-round ratios
this / reference of requests per second and of server CPU per request, with their range. On a
shared machine the requests per second of two servers measured seconds apart differ widely (an A/A
run, both servers this checkout, gave 0.40-1.22); server CPU per request is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_load import get_json, run_wrk, server_cpu_seconds  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def start(repo: Path, home: Path, port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "RECFORGE_HOME": str(home), "RECFORGE_PORT": str(port), "PYTHONPATH": str(repo)}
    server = subprocess.Popen(
        [sys.executable, "-m", "serving"], env=env, cwd=repo, stdout=log_path.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 600
    while True:
        try:
            if get_json(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return server
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server of {repo} did not get ready; see {log_path}")
        time.sleep(0.2)


def script(users: int, prefix: str, k: int) -> str:
    width = len(str(users))
    path = f"/v1/users/{prefix}%0{width}d/recommendations?k={k}"
    request = f'string.format("{path}", math.random(0, {users - 1}))'
    return f'math.randomseed(42)\nrequest = function() return wrk.format("GET", {request}) end\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of the reference code, built")
    parser.add_argument("--users", type=int, default=200_000, help="the publication's users (u000000 ...)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    endpoints = {"known_users": script(args.users, "u", 10), "unknown_users": script(args.users, "x", 10)}
    logs = args.home / "bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    servers = {
        "reference": (start(args.reference, args.home, 8741, logs / "reference.log"), 8741),
        "this": (start(REPO, args.home, 8742, logs / "this.log"), 8742),
    }
    runs = []
    try:
        for _, port in servers.values():  # warm-up, not recorded
            for lua in endpoints.values():
                run_wrk(f"http://127.0.0.1:{port}", lua, 2, args.connections)
        for round_ in range(args.rounds):
            for endpoint, lua in endpoints.items():
                order = list(servers.items())
                for name, (server, port) in order if round_ % 2 == 0 else order[::-1]:  # neither always first
                    cpu = server_cpu_seconds(server.pid)
                    result = run_wrk(f"http://127.0.0.1:{port}", lua, args.seconds, args.connections)
                    used = server_cpu_seconds(server.pid) - cpu
                    result.update(
                        round=round_, endpoint=endpoint, server=name,
                        server_cpu_us_per_request=round(used / max(result["requests"], 1) * 1e6, 2),
                    )  # fmt: skip
                    runs.append(result)
                    print(f"round {round_} {endpoint:13s} {name:9s} {result['requests_per_second']:9.0f} req/s "
                          f"{result['server_cpu_us_per_request']:7.1f} us CPU/req non-2xx {result['non_2xx']}",
                          flush=True)  # fmt: skip
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)

    summary = {}
    for endpoint in endpoints:
        by = {(r["server"], r["round"]): r for r in runs if r["endpoint"] == endpoint}
        for measure in ("requests_per_second", "server_cpu_us_per_request"):
            ratios = [by["this", n][measure] / by["reference", n][measure] for n in range(args.rounds)]
            summary[f"{endpoint}_{measure}_this_over_reference"] = {
                "median": round(float(np.median(ratios)), 3),
                "min": round(min(ratios), 3),
                "max": round(max(ratios), 3),
            }
            for name in servers:
                values = [by[name, n][measure] for n in range(args.rounds)]
                summary[f"{endpoint}_{measure}_{name}_median"] = round(float(np.median(values)), 1)
    failures = args.home / "serving" / "failures"
    summary["failure_log_bytes"] = sum(p.stat().st_size for p in failures.glob("failures.jsonl*"))
    print(json.dumps(summary, indent=2))
    print(
        f"failure log cost: known users at {summary['known_users_requests_per_second_this_over_reference']['median']}x "
        f"and unknown users at {summary['unknown_users_requests_per_second_this_over_reference']['median']}x "
        "the reference's requests/s (median of per-round ratios)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "runs": runs, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
