"""Benchmark: `recforge publish` of a synthetic champion, wall time and peak RSS, one code tree against another.

    python benchmarks/publication_scale.py --users 100000 --old-tree /tmp/recforge-old   # old vs this tree
    python benchmarks/publication_scale.py --users 1000000                               # this tree alone

The champion is an ALS model built directly from random factors (64 dimensions; no training, no
MLflow): `--users` users, `--items` items (100k by default), a skewed history of ~15 items per user
(about a quarter of users cold, under 5 items), a catalog of 50 categories and 200 sellers with 2% of
items out of stock and 1% blocked, and 1% of users who withheld consent. Each run is a child
process with ``PYTHONPATH`` at one tree that builds that model (same seed, so the same model for
every tree), then times the real ``publish()`` of that tree: the lists, the lists file, the
``publication`` checkpoint over it, the fallback, items.parquet, the item index, the manifest and
the atomic switch. Only the champion's loading, the warehouse reads and the audit's MLflow logging
are replaced (the audit's computation, ``audit_lists``, still runs). Peak RSS is the child's
``ru_maxrss`` (model included; the RSS before publishing is reported beside it).

With `--old-tree`, both trees publish the same champion and the lists files are compared row for
row (schema metadata aside). Results go to ``benchmarks/results/publication_scale.json`` (appended).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import numpy as np, pandas as pd, scipy.sparse as sp

users, items, seed, home = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
batch_users = int(os.environ.get("BENCH_BATCH_USERS", "50000"))
rng = np.random.default_rng(seed)

from models.als import ALSRecommender

model = ALSRecommender(factors=64)
model.user_factors = (rng.standard_normal((users, 64), dtype=np.float32) * 0.3)
model.item_factors = (rng.standard_normal((items, 64), dtype=np.float32) * 0.3)
# Ids whose string order is not their index order, as in real data.
model.user_ids = np.array([f"u{i}" for i in rng.permutation(users)], dtype=object)
model.item_ids = np.array([f"i{i}" for i in range(items)], dtype=object)
lengths = np.minimum(rng.geometric(1 / 15, users), 500)
rows = np.repeat(np.arange(users), lengths)
cols = np.minimum((rng.random(len(rows)) ** 3 * items).astype(np.int64), items - 1)  # skewed popularity
seen = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(users, items))
seen.data[:] = 1.0
model.seen = seen
model.is_fitted = True
catalog = pd.DataFrame({
    "item_id": model.item_ids.astype(str),
    "title": [f"title {i}" for i in range(items)],
    "category": [f"c{c:02d}" for c in rng.integers(0, 50, items)],
    "seller": [f"s{s:03d}" for s in rng.integers(0, 200, items)],
    "price": rng.gamma(2.0, 20.0, items).round(2),
    "in_stock": rng.random(items) > 0.02,
    "is_blocked": rng.random(items) < 0.01,
})
purchased = pd.DataFrame(
    {"user_id": model.user_ids[rows[::50]].astype(str), "item_id": model.item_ids[cols[::50]].astype(str)}
)
withheld = set(model.user_ids[rng.choice(users, users // 100, replace=False)].astype(str))

from pipelines.publication import publish as publish_module
from pipelines.reports.bias_audit import audit_lists
from pipelines.settings import Settings

batched = {"publish_batch_users": batch_users} if "publish_batch_users" in Settings.model_fields else {}  # old trees
settings = Settings(home=home, **batched)
settings.ensure_dirs()
facts = {"registered_model": "bench", "version": "1", "run_id": "bench", "algorithm": "als", "data_snapshot": "bench"}
publish_module.load_champion = lambda s: (model, facts)
publish_module.read_items = lambda s: catalog
publish_module.read_purchases = lambda s: purchased
publish_module.read_consent_withheld = lambda s: withheld
audited = {}
publish_module.audit_publication = lambda s, audit, f, v, r: audited.setdefault(
    "result", audit_lists(audit, "publication", s.eval_k, s.audit_z)
)
publish_module.write_index = lambda s: None

rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
if os.environ.get("BENCH_PROFILE"):  # where the time goes, to stderr
    import cProfile, pstats
    profiler = cProfile.Profile()
    result = profiler.runcall(publish_module.publish, settings)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(45)
else:
    result = publish_module.publish(settings)
wall = time.perf_counter() - started
manifest = json.loads((result.path / "manifest.json").read_text())
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_publish_mb": rss_before, "counts": manifest["counts"],
                  "lists_file": str(result.path / "user_recs.parquet"),
                  "lists_mb": (result.path / "user_recs.parquet").stat().st_size / 2**20}))
"""


def run_child(tree: Path, users: int, items: int, seed: int, home: Path, batch_users: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "BENCH_BATCH_USERS": str(batch_users)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(users), str(items), str(seed), str(home)],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"publish in {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_lists(old: str, new: str) -> dict:
    """Row-for-row comparison of two lists files (schema metadata aside)."""
    import pyarrow.parquet as pq

    a, b = pq.read_table(old), pq.read_table(new)
    a, b = a.replace_schema_metadata(None), b.replace_schema_metadata(None)
    if a.num_rows != b.num_rows or a.schema != b.schema:
        return {"equal": False, "rows": [a.num_rows, b.num_rows], "schemas_equal": a.schema == b.schema}

    def values(table, name):
        return table.column(name).to_numpy(zero_copy_only=False)

    differing = {name: int((values(a, name) != values(b, name)).sum()) for name in a.column_names}
    if differing["item_id"]:  # where the two trees order items differently: are the scores there equal (ties)?
        moved = values(a, "item_id") != values(b, "item_id")
        tied = values(a, "score")[moved] == values(b, "score")[moved]
        differing["item_id_moves_at_equal_scores"] = bool(tied.all())
        differing["item_id_moves_users"] = len(set(values(a, "user_id")[moved]))
    return {"equal": a.equals(b), "rows": a.num_rows, "differing_values": differing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-users", type=int, default=50_000, help="publish_batch_users of the new tree")
    parser.add_argument("--old-tree", type=Path, help="a checkout to compare against (run side by side)")
    args = parser.parse_args()

    trees = {"new": HERE, **({"old": args.old_tree.resolve()} if args.old_tree else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="publication-scale-") as scratch:
        for repeat in range(args.repeat):
            for name, tree in trees.items():  # alternate, so both see the same machine
                home = Path(scratch) / f"{name}-{repeat}"
                run = run_child(tree, args.users, args.items, args.seed, home, args.batch_users)
                runs[name].append(run)
                print(f"{name} #{repeat + 1}: {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB "
                      f"(before publish {run['rss_before_publish_mb']:.0f} MB), {run['counts']['user_rows']} rows",
                      flush=True)  # fmt: skip
        comparison = same_lists(runs["old"][0]["lists_file"], runs["new"][0]["lists_file"]) if "old" in runs else None
    summary = {
        name: {
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "wall_s_range": [min(r["wall_s"] for r in rs), max(r["wall_s"] for r in rs)],
            "peak_rss_mb_median": statistics.median(r["peak_rss_mb"] for r in rs),
            "peak_rss_mb_range": [min(r["peak_rss_mb"] for r in rs), max(r["peak_rss_mb"] for r in rs)],
            "rss_before_publish_mb": rs[0]["rss_before_publish_mb"],
            "counts": rs[0]["counts"],
            "lists_mb": rs[0]["lists_mb"],
        }
        for name, rs in runs.items()
    }
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
        "users": args.users,
        "items": args.items,
        "repeat": args.repeat,
        "batch_users": args.batch_users,
        "trees": {name: str(tree) for name, tree in trees.items()},
        "summary": summary,
        "old_vs_new_lists": comparison,
    }
    out = HERE / "benchmarks" / "results" / "publication_scale.json"
    history = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*history, record], indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
