"""What routing users to experiment variants costs: recommendations throughput with every user in a running
experiment against the same server code with no experiment (and, optionally, against another checkout).

    python benchmarks/serving_publication.py --home /tmp/rf-variants-bench --users 100000 --items 20000 --fresh
    python benchmarks/experiments_load.py --home /tmp/rf-variants-bench --reference-repo /work/main \\
        --out benchmarks/results/experiments_load.json

Servers run side by side on one publication, pinned to CPU 0 (wrk on CPU 1), the impression log on
(files) as in production:

- ``plain``: this code, no experiment running (its users get CURRENT, as before experiments);
- ``experiment``: this code, one experiment taking every user: half on CURRENT's version (control),
  half on a second publication (challenger, a hard-linked clone, loaded and verified on its own), so
  every request pays the assignment hash and half are answered by the variant's C path;
- ``reference`` (with ``--reference-repo``): another checkout's code (e.g. main before experiments).

After a warm-up of each, wrk drives random known users' recommendations at each server in turn,
rotating which goes first, for ``--rounds`` rounds; the figures are medians of per-round ratios to
``plain`` (requests per second) with their spread.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving_load  # noqa: E402
from serving_load import CLIENT_CPU, PINNING, SERVER_CPU, get_json, lua_script, run_wrk, start_server  # noqa: E402
from serving_publication import clone_version  # noqa: E402

from pipelines.publication.publish import current_version  # noqa: E402
from pipelines.runtime.processes import free_port  # noqa: E402
from serving.experiments import STATE_FILE, Assignment  # noqa: E402


def experiment_home(home: Path, target: Path) -> str:
    """`target` sharing `home`'s publications (a symlink), with one running experiment over every user."""
    published = home / "published"
    live = current_version(published)
    clones = sorted(p.name for p in published.iterdir() if p.name.endswith("-vclone"))
    challenger = clones[-1] if clones else clone_version(published, live)
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    (target / "published").symlink_to(published.resolve())
    now = datetime.now(UTC)
    assignment = Assignment("bench", "1", (("control", 0.5), ("challenger", 0.5)))
    state = {"bench": {
        "status": "running", "started_at": now.isoformat(), "assignment": assignment.to_json(),
        "publications": {"control": live, "challenger": challenger}, "canary_rollback": {},
        "start": (now - timedelta(days=1)).isoformat(), "end": (now + timedelta(days=1)).isoformat(),
    }}  # fmt: skip
    (target / STATE_FILE).parent.mkdir(parents=True)
    (target / STATE_FILE).write_text(json.dumps(state))
    return challenger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--reference-repo", type=Path, help="another checkout whose server is measured too")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PINNING.update(server=["taskset", "-c", SERVER_CPU], client=["taskset", "-c", CLIENT_CPU])
    with_experiment = Path(tempfile.gettempdir()) / "recforge-experiments-bench-home"
    challenger = experiment_home(args.home, with_experiment)

    plans = [("plain", args.home, serving_load.REPO), ("experiment", with_experiment, serving_load.REPO)]
    if args.reference_repo is not None:
        plans.append(("reference", args.home, args.reference_repo.resolve()))
    servers, bases = {}, {}
    own_repo = serving_load.REPO
    try:
        for name, home, repo in plans:
            serving_load.REPO = repo  # start_server puts it on the server's PYTHONPATH
            port = free_port()
            log_path = Path(tempfile.gettempdir()) / f"recforge-experiments-bench-{name}.log"
            servers[name], _ = start_server(home, port, log_path)
            bases[name] = f"http://127.0.0.1:{port}"
    finally:
        serving_load.REPO = own_repo
    results: dict = {"pinned": bool(PINNING["server"]), "challenger": challenger, "runs": []}
    try:
        deadline = time.monotonic() + 120
        while not get_json(f"{bases['experiment']}/experimentz")[1].get("experiments"):
            assert time.monotonic() < deadline, "the experiment server never routed the experiment"
            time.sleep(0.5)
        results["experimentz"] = get_json(f"{bases['experiment']}/experimentz")[1]
        readyz = get_json(f"{bases['plain']}/readyz")[1]
        results["readyz"] = readyz
        script = lua_script("recommendations", readyz["users"], readyz["items"], args.k)
        names = list(servers)
        for name in names:
            run_wrk(bases[name], script, args.warmup, args.connections)
        for round_number in range(args.rounds):
            order = names[round_number % len(names) :] + names[: round_number % len(names)]
            for name in order:
                row = {"server": name, "round": round_number + 1, "load_average": os.getloadavg()}
                row.update(run_wrk(bases[name], script, args.seconds, args.connections))
                print(json.dumps(row), flush=True)
                results["runs"].append(row)
    finally:
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.wait(timeout=120)
    by = {(r["server"], r["round"]): r["requests_per_second"] for r in results["runs"]}
    rounds = range(1, args.rounds + 1)
    for name in servers:
        ratios = [by[name, n] / by["plain", n] for n in rounds]
        results[f"{name}_median_rps"] = float(np.median([by[name, n] for n in rounds]))
        results[f"{name}_share_of_plain"] = round(float(np.median(ratios)), 3)
        results[f"{name}_share_of_plain_spread"] = [round(min(ratios), 3), round(max(ratios), 3)]
    print(json.dumps({k: v for k, v in results.items() if k not in ("runs", "experimentz")}, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
