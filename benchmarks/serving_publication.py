"""Write a synthetic publication at serving scale, in the real format, and time loading it.

    python benchmarks/serving_publication.py --home /tmp/recforge-bench --users 1000000 --items 100000

Writes ``<home>/published/<version>/`` exactly as ``pipelines.publication.publish`` does (user_recs.parquet
sorted by user and rank, fallback.parquet, items.parquet, the item index chosen by catalog size,
manifest.json with sha256 of every file) and switches ``CURRENT`` to it with the same atomic
switch. The lists are random but shaped like real ones: 100 distinct items per user with
descending scores, reasons mostly ``model``, some ``similar_to:<item>`` and ``popular``.

Then it loads the publication the way the server does (``serving.publication.Publication``) and
prints the load time, the memory of the lists per user and the process's RSS growth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.publication.item_index import write_item_index  # noqa: E402
from pipelines.publication.publish import seal_version, switch_current  # noqa: E402
from pipelines.settings import Settings  # noqa: E402
from serving.format import FALLBACK, INDEX_FILE, ITEMS, MANIFEST, STAGING_PREFIX, USER_RECS, file_facts  # noqa: E402

USERS_PER_CHUNK = 20_000


def ids(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ids, so string order is numeric order (as sorted lists need)."""
    return np.char.add(prefix, np.char.zfill(np.asarray(numbers).astype(str), width))


def write_user_recs(path: Path, n_users: int, item_ids: np.ndarray, top_n: int, rng: np.random.Generator) -> int:
    """Dictionary-encoded columns, one row group per chunk of users: the layout pyarrow writes for real lists."""
    n_items = len(item_ids)
    anchors = rng.choice(n_items, size=min(2000, n_items), replace=False)
    reasons = np.concatenate([["model", "popular"], np.char.add("similar_to:", item_ids[anchors])])
    items_dict = pa.array(item_ids)
    reasons_dict = pa.array(reasons)
    schema = pa.schema(
        [
            ("user_id", pa.dictionary(pa.int32(), pa.string())),
            ("rank", pa.int16()),
            ("item_id", pa.dictionary(pa.int32(), pa.string())),
            ("score", pa.float32()),
            ("item_row", pa.int32()),
            ("reason", pa.dictionary(pa.int32(), pa.string())),
        ]
    )
    width = len(str(n_users))
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, n_users, USERS_PER_CHUNK):
            users = np.arange(first, min(first + USERS_PER_CHUNK, n_users))
            # 100 distinct items per user: a random start and stride modulo the catalog (stride coprime-ish).
            start = rng.integers(0, n_items, size=(len(users), 1))
            stride = rng.integers(1, 997, size=(len(users), 1)) * 2 + 1
            items = ((start + stride * np.arange(top_n)) % n_items).astype(np.int32)
            scores = np.sort(rng.random((len(users), top_n), dtype=np.float32), axis=1)[:, ::-1]
            kind = rng.choice([0, 1, 2], size=(len(users), top_n), p=[0.6, 0.05, 0.35])
            reason = np.where(kind == 2, 2 + rng.integers(0, len(anchors), size=kind.shape), kind).astype(np.int32)
            table = pa.table(
                {
                    "user_id": pa.DictionaryArray.from_arrays(
                        np.repeat(np.arange(len(users), dtype=np.int32), top_n), pa.array(ids("u", users, width))
                    ),
                    "rank": np.tile(np.arange(1, top_n + 1, dtype=np.int16), len(users)),
                    "item_id": pa.DictionaryArray.from_arrays(items.ravel(), items_dict),
                    "score": scores.ravel(),
                    "item_row": items.ravel(),
                    "reason": pa.DictionaryArray.from_arrays(reason.ravel(), reasons_dict),
                },
                schema=schema,
            )
            writer.write_table(table)
            rows += table.num_rows
            print(f"\r  user_recs: {users[-1] + 1:,}/{n_users:,} users", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return rows


def generate(home: Path, n_users: int, n_items: int, top_n: int, dimension: int, seed: int) -> Path:
    settings = Settings(home=home, publish_top_n=top_n)
    root = settings.published_dir
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-vsynthetic"
    staging = root / f"{STAGING_PREFIX}{version}"
    staging.mkdir()
    item_ids = ids("i", np.arange(n_items), len(str(n_items)))

    timings = {}
    started = time.perf_counter()
    rows = write_user_recs(staging / USER_RECS, n_users, item_ids, top_n, rng)
    timings["user_recs_seconds"] = time.perf_counter() - started

    categories = rng.integers(0, 50, size=n_items)
    items = pa.table(
        {
            "item_id": item_ids,
            "title": np.char.add("Item ", item_ids),
            "category": np.char.add("c", categories.astype(str)),
            "price": rng.uniform(1, 100, size=n_items).round(2),
            "in_stock": np.ones(n_items, dtype=bool),
            "is_blocked": np.zeros(n_items, dtype=bool),
            "index_row": np.arange(n_items, dtype=np.int32),
        }
    )
    pq.write_table(items, staging / ITEMS)
    popular = rng.choice(n_items, size=top_n, replace=False)
    pq.write_table(
        pa.table(
            {
                "rank": np.arange(1, top_n + 1, dtype=np.int16),
                "item_id": item_ids[popular],
                "score": np.sort(rng.random(top_n, dtype=np.float32))[::-1] * 1000,
                "reason": ["popular"] * top_n,
            }
        ),
        staging / FALLBACK,
    )

    # Clustered embeddings (items near one of 200 centres), like a trained model's, not uniform noise.
    centres = rng.normal(size=(200, dimension)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, size=n_items)] + 0.5 * rng.normal(size=(n_items, dimension)).astype(
        np.float32
    )
    started = time.perf_counter()
    spec = write_item_index(vectors, staging / INDEX_FILE, settings)
    timings["index_seconds"] = time.perf_counter() - started

    manifest = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "model": {"registered_model": "synthetic", "version": "0", "run_id": None, "algorithm": "synthetic"},
        "data_snapshot": "synthetic",
        "top_n": top_n,
        "rules": {"applied": ["synthetic"], "parameters": {"seed": seed}},
        "item_index": spec,
        "counts": {"users": n_users, "user_rows": rows, "fallback_items": top_n, "indexed_items": n_items},
        "files": file_facts(staging),
    }
    seal_version(staging, manifest)
    os.rename(staging, root / version)
    switch_current(root, version)
    print(json.dumps({"version": version, "item_index": spec["type"], **timings}, indent=None), file=sys.stderr)
    return root / version


def clone_version(root: Path, source: str) -> str:
    """A new version with the same files (hard links) and its own manifest: a cheap 'new publication'."""
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-vclone"
    staging = root / f"{STAGING_PREFIX}{version}"
    staging.mkdir()
    for path in (root / source).iterdir():
        if path.name != MANIFEST:
            os.link(path, staging / path.name)
    manifest = json.loads((root / source / MANIFEST).read_text())
    manifest.update(version=version, created_at=datetime.now(UTC).isoformat())
    seal_version(staging, manifest)
    os.rename(staging, root / version)
    return version


def measure_load(directory: Path) -> dict:
    import psutil

    from serving.publication import Publication

    process = psutil.Process()
    before = process.memory_info().rss
    publication = Publication(directory)
    after = process.memory_info().rss
    return {
        "users": publication.n_users,
        "rows": int(publication.offsets[-1]),
        "load_seconds": round(publication.load_seconds, 2),
        "list_bytes_per_user": round(publication.bytes_per_user, 1),
        "rss_growth_bytes_per_user": round((after - before) / publication.n_users, 1),
        "rss_after_load_mib": round(after / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--dimension", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fresh", action="store_true", help="delete <home>/published first")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.home / "published", ignore_errors=True)
    directory = generate(args.home, args.users, args.items, args.top_n, args.dimension, args.seed)
    print(json.dumps(measure_load(directory)))


if __name__ == "__main__":
    main()
