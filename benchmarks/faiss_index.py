"""Recall@10 against exact search, and single-query throughput, of the similar-items index types.

    nice -n 10 python benchmarks/faiss_index.py --sizes 10000 100000 1000000

For each catalog size: clustered unit vectors of dimension 64 (items around 1,000 centres, as
trained embeddings are; ``--noise`` sets the spread: 0.35 gives tight clusters, 1.0 nearly uniform
vectors, the hard case for every ANN index), 1,000 held-out queries from the same distribution, the exact top 10 from
``IndexFlatIP`` as ground truth, then for Flat, HNSW (the parameters from settings, as the
publication builds it) and, for comparison, IVF-Flat: build seconds, index size, recall@10 and
queries per second one query at a time on one thread (how the server asks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.lists.rules import unit_vectors  # noqa: E402
from pipelines.publication.item_index import build_index, index_spec  # noqa: E402
from pipelines.settings import Settings  # noqa: E402

K = 10


def clustered(n: int, dimension: int, rng: np.random.Generator, centres: np.ndarray, noise: float) -> np.ndarray:
    around = centres[rng.integers(0, len(centres), size=n)]
    return unit_vectors(around + noise * rng.normal(size=(n, dimension)).astype(np.float32))


def timed_queries(index, queries: np.ndarray, seconds: float = 10.0) -> tuple[np.ndarray, float]:
    """Top-K for each query, one at a time; QPS over at most `seconds` (remaining queries are batched)."""
    found = np.empty((len(queries), K), dtype=np.int64)
    started = time.perf_counter()
    done = 0
    while done < len(queries) and time.perf_counter() - started < seconds:
        found[done] = index.search(queries[done : done + 1], K)[1][0]
        done += 1
    qps = done / (time.perf_counter() - started)
    if done < len(queries):
        found[done:] = index.search(queries[done:], K)[1]
    return found, qps


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def run(n: int, dimension: int, n_queries: int, settings: Settings, seed: int, noise: float) -> list[dict]:
    import faiss

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dimension)).astype(np.float32)
    vectors = clustered(n, dimension, rng, centres, noise)
    queries = clustered(n_queries, dimension, rng, centres, noise)
    results = []
    flat = None
    nlist = int(4 * np.sqrt(n))
    candidates = {
        "flat": {"type": "flat", "metric": "inner_product", "dimension": dimension},
        "hnsw": index_spec(settings.faiss_exact_max_items + 1, dimension, settings),  # as published above it
        f"ivf{nlist},nprobe16": None,
    }
    for name, spec in candidates.items():
        started = time.perf_counter()
        if spec is not None:
            index = build_index(vectors, spec)
        else:
            quantizer = faiss.IndexFlatIP(dimension)
            index = faiss.IndexIVFFlat(quantizer, dimension, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
            index.add(vectors)
            index.nprobe = 16
        build = time.perf_counter() - started
        faiss.omp_set_num_threads(1)
        found, qps = timed_queries(index, queries)
        faiss.omp_set_num_threads(0)  # back to the default for the next build
        if name == "flat":
            flat = found
        row = {
            "items": n,
            "noise": noise,
            "index": name,
            "build_seconds": round(build, 1),
            "index_mib": round(faiss.serialize_index(index).nbytes / 2**20, 1),
            "recall_at_10": round(recall(found, flat), 4),
            "qps_one_thread": round(qps),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
        del index
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dimension", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.35,
        help="spread around the centres (0.35: tight clusters; 1.0: hard, nearly uniform)",
    )
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    settings = Settings()
    rows = [row for n in args.sizes for row in run(n, args.dimension, args.queries, settings, args.seed, args.noise)]
    print("\n| items | index | build s | size MiB | recall@10 vs Flat | QPS (1 thread, 1 query) |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['items']:,} | {r['index']} | {r['build_seconds']} | {r['index_mib']} | "
            f"{r['recall_at_10']:.3f} | {r['qps_one_thread']:,} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
