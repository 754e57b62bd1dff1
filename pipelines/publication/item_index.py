"""The similar-items index over the champion's item embeddings.

Exact search (``IndexFlatIP``) up to `faiss_exact_max_items` items: at that size a brute-force
query costs well under a millisecond and recall is 1 by construction. Above it, HNSW
(``IndexHNSWFlat``, inner product): no training step and no cell count to retune as the catalog
grows (IVF needs k-means on the catalog and an nlist/nprobe pair matched to its size, and loses
recall on items near cell borders), high recall at a modest beam width, and sub-millisecond
queries at a million items. Its price is memory (about 2 x M x 4 bytes of graph per item) and
build time; benchmarks/faiss_index.py measures both sides.

Vectors are L2-normalised first, so inner product is cosine similarity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.lists.rules import unit_vectors
from pipelines.settings import Settings


def index_spec(n_items: int, dimension: int, settings: Settings) -> dict:
    """Which index a catalog of this size gets, with its parameters (recorded in the manifest)."""
    if n_items <= settings.faiss_exact_max_items:
        return {"type": "flat", "metric": "inner_product", "dimension": dimension}
    return {
        "type": "hnsw",
        "metric": "inner_product",
        "dimension": dimension,
        "m": settings.faiss_hnsw_m,
        "ef_construction": settings.faiss_hnsw_ef_construction,
        "ef_search": settings.faiss_hnsw_ef_search,
    }


def build_index(vectors: np.ndarray, spec: dict):
    """A FAISS index holding the unit-length `vectors`, row i = item i."""
    import faiss

    normed = np.ascontiguousarray(unit_vectors(vectors))
    if spec["type"] == "flat":
        index = faiss.IndexFlatIP(normed.shape[1])
    elif spec["type"] == "hnsw":
        index = faiss.IndexHNSWFlat(normed.shape[1], spec["m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec["ef_construction"]
        index.hnsw.efSearch = spec["ef_search"]
    else:
        raise ValueError(f"unknown item index type {spec['type']!r} (expected 'flat' or 'hnsw')")
    index.add(normed)
    return index


def write_item_index(vectors: np.ndarray, path: Path, settings: Settings) -> dict:
    """Build the index the catalog size calls for and write it; returns its spec for the manifest."""
    import faiss

    spec = index_spec(len(vectors), vectors.shape[1], settings)
    faiss.write_index(build_index(vectors, spec), str(path))
    return spec
