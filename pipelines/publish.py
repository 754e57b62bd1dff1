"""Publish the champion's precomputed lists and item index, then make them live atomically.

A publication is a directory ``published/<version>/`` that is complete before anyone can
see it: files are written into a hidden staging directory, fsynced, the directory is
renamed into place, and only then is ``CURRENT`` replaced (write a temp file, fsync,
rename). A crash at any point leaves the live version untouched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from models.base import Recommender
from models.business_rules import category_capped_order, head_within_cap
from models.columns import Columns
from pipelines.settings import Settings
from pipelines.validate import validate_publication
from pipelines.warehouse import read_frame

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
MANIFEST = "manifest.json"
RULES = [
    "exclude_seen_items",
    "exclude_purchased_items",
    "exclude_blocked_items",
    "exclude_out_of_stock_items",
    "category_cap_top10",
]


class PublishError(RuntimeError):
    pass


@dataclass
class PublishResult:
    version: str
    path: Path
    users: int
    items_indexed: int

    def summary(self) -> str:
        return f"published {self.version}: {self.users} users, {self.items_indexed} items indexed -> {self.path}"


def load_champion(settings: Settings) -> tuple[Recommender, dict]:
    """Download the model behind the `champion` alias and load it; also return its registry facts."""
    import mlflow

    from pipelines.tracking import CHAMPION, configure, version_by_alias

    client = configure(settings)
    version = version_by_alias(client, settings.registered_model_name, CHAMPION)
    if version is None:
        raise PublishError(f"registered model {settings.registered_model_name!r} has no '{CHAMPION}' alias")
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.registered_model_name}@{CHAMPION}",
            dst_path=str(settings.models_dir / f"champion-v{version.version}"),
        )
    )
    model = Recommender.load(local / "artifacts" / "bundle")
    facts = {
        "registered_model": settings.registered_model_name,
        "version": str(version.version),
        "run_id": version.run_id,
        "algorithm": model.name,
        "data_snapshot": client.get_run(version.run_id).data.tags.get("data_snapshot"),
    }
    return model, facts


def read_items(settings: Settings) -> pd.DataFrame:
    return read_frame(
        settings, "select item_id, title, category, price, in_stock, is_blocked from staging.stg_items order by item_id"
    )


def item_vectors(model: Recommender) -> np.ndarray:
    """Embeddings for the similar-items index: the model's own, else an SVD of item co-occurrence."""
    if model.item_embeddings is not None:
        return np.asarray(model.item_embeddings, dtype=np.float32)
    from scipy.sparse.linalg import svds

    dims = max(1, min(32, min(model.seen.shape) - 1))
    _, s, vt = svds(model.seen.astype(np.float32), k=dims)
    return (vt.T * s).astype(np.float32)


def capped_top_n(
    model: Recommender, allowed: np.ndarray, categories: np.ndarray, top_n: int, cap: float
) -> tuple[np.ndarray, np.ndarray]:
    """Top-N per user with the category cap on the first 10.

    Candidates are the top N plus a margin; the few users whose margin is not diverse enough
    are re-ranked over the whole catalog, so the cap holds wherever the catalog allows it.
    """
    users = np.arange(len(model.user_ids))
    depth = min(len(model.item_ids), top_n + 50)
    ranked, scores = model.recommend(users, depth, allowed_items=allowed)
    order = category_capped_order(ranked, categories, cap)
    ranked, scores = np.take_along_axis(ranked, order, axis=1), np.take_along_axis(scores, order, axis=1)
    short = np.flatnonzero(~head_within_cap(ranked, categories, cap))
    if len(short) and depth < len(model.item_ids):
        deep, deep_scores = model.recommend(short, len(model.item_ids), allowed_items=allowed)
        order = category_capped_order(deep, categories, cap)
        ranked[short] = np.take_along_axis(deep, order, axis=1)[:, :depth]
        scores[short] = np.take_along_axis(deep_scores, order, axis=1)[:, :depth]
    return ranked[:, :top_n], scores[:, :top_n]


def build_lists(
    model: Recommender, items: pd.DataFrame, top_n: int, category_cap: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-N per known user and the popularity fallback, both after the business rules."""
    catalog = items.set_index(Columns.Item)
    known = catalog.reindex(model.item_ids)
    allowed = (known["in_stock"].fillna(False) & ~known["is_blocked"].fillna(True)).to_numpy(dtype=bool)
    categories = pd.factorize(known["category"].fillna("unknown"))[0]
    ranked, scores = capped_top_n(model, allowed, categories, top_n, category_cap)
    rows, ranks = np.nonzero(ranked >= 0)
    user_recs = pd.DataFrame(
        {
            Columns.User: model.user_ids[rows].astype(str),
            Columns.Rank: (ranks + 1).astype(np.int16),
            Columns.Item: model.item_ids[ranked[rows, ranks]].astype(str),
            Columns.Score: scores[rows, ranks].astype(np.float32),
            Columns.Reason: "model",
        }
    )
    popularity = np.asarray((model.seen > 0).sum(axis=0)).ravel().astype(np.float32)
    popularity[~allowed] = -np.inf
    top = np.argsort(-popularity, kind="stable")
    top = top[np.isfinite(popularity[top])]
    top = top[category_capped_order(top[None, :], categories, category_cap)[0]][:top_n]
    fallback = pd.DataFrame(
        {
            Columns.Rank: np.arange(1, len(top) + 1, dtype=np.int16),
            Columns.Item: model.item_ids[top].astype(str),
            Columns.Score: popularity[top],
            Columns.Reason: "popular",
        }
    )
    return user_recs, fallback


def read_purchases(settings: Settings) -> pd.DataFrame:
    """(user_id, item_id) pairs the user bought or rated: never to be recommended back."""
    return read_frame(
        settings, "select distinct user_id, item_id from staging.stg_events where event_type in ('purchase', 'rating')"
    )


def write_item_index(vectors: np.ndarray, path: Path) -> None:
    import faiss

    normed = np.ascontiguousarray(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12))
    index = faiss.IndexFlatIP(normed.shape[1])
    index.add(normed)
    faiss.write_index(index, str(path))


def publish(settings: Settings) -> PublishResult:
    """Score the champion for every known user and make the result the live publication."""
    model, facts = load_champion(settings)
    items = read_items(settings)
    user_recs, fallback = build_lists(model, items, settings.publish_top_n, settings.category_cap)
    indexed = pd.DataFrame({Columns.Item: model.item_ids.astype(str)}).merge(items, on=Columns.Item, how="left")
    indexed["index_row"] = np.arange(len(indexed), dtype=np.int32)

    root = settings.published_dir
    root.mkdir(parents=True, exist_ok=True)
    version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-v{facts['version']}"
    staging = root / f".staging-{version}"
    staging.mkdir()
    try:
        # The publication suite runs before anything can go live; a critical failure raises here.
        validate_publication(settings, user_recs, items, read_purchases(settings), version)
        pq.write_table(pa.Table.from_pandas(user_recs, preserve_index=False), staging / "user_recs.parquet")
        pq.write_table(pa.Table.from_pandas(fallback, preserve_index=False), staging / "fallback.parquet")
        pq.write_table(pa.Table.from_pandas(indexed, preserve_index=False), staging / "items.parquet")
        write_item_index(item_vectors(model), staging / "item_index.faiss")
        manifest = {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(),
            "model": facts,
            "data_snapshot": facts["data_snapshot"],
            "top_n": settings.publish_top_n,
            "rules": RULES,
            "category_cap": settings.category_cap,
            "counts": {
                "users": int(user_recs[Columns.User].nunique()),
                "user_rows": len(user_recs),
                "fallback_items": len(fallback),
                "indexed_items": len(indexed),
            },
            "files": {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in sorted(staging.iterdir())},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for path in staging.iterdir():
            _fsync(path)
        final = root / version
        os.rename(staging, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    switch_current(root, version)
    prune_versions(root, settings.publish_keep_versions)
    result = PublishResult(version, final, manifest["counts"]["users"], len(indexed))
    log.info(result.summary())
    return result


def switch_current(root: Path, version: str) -> None:
    """Point CURRENT at a complete version: write a temp file, fsync it, rename over CURRENT."""
    if not (root / version / MANIFEST).exists():
        raise PublishError(f"refusing to make {version} live: {root / version / MANIFEST} is missing")
    tmp = root / f".{CURRENT}.tmp"
    with open(tmp, "w") as handle:
        handle.write(version + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / CURRENT)
    _fsync(root)


def current_version(root: Path) -> str | None:
    path = root / CURRENT
    return path.read_text().strip() if path.exists() else None


def prune_versions(root: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete versions; never the live one."""
    live = current_version(root)
    versions = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    doomed = [v for v in versions[:-keep] if v != live] if keep > 0 else []
    for version in doomed:
        shutil.rmtree(root / version)
    return doomed


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
