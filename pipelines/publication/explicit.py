"""A publication of lists chosen by the caller, not scored by a model: what the off-policy check serves.

The check against the live server (pipelines/traffic/ips_check.py) needs serving to show lists the
simulator chose: a logging list A that exploration perturbs, then a target B that exploration can
reach (no model ranks exactly so). The version is written like ``publish()`` writes one: the same
contract (serving/format.py), staged, sealed with its manifest, renamed into place and made live
under the publish lock. Its manifest names the algorithm ``explicit`` and its label, so nobody takes
it for a model's; its item vectors are random (similar-items answers from it mean nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.publication.item_index import write_item_index
from pipelines.publication.publish import (
    check_publishable_ids,
    prune_versions,
    publish_lock,
    remove_stale_staging,
    seal_version,
    staged_version,
    switch_current,
)
from pipelines.publication.user_recs import USER_RECS_SCHEMA
from pipelines.settings import Settings
from serving.format import FALLBACK, INDEX_FILE, ITEMS, USER_RECS, file_facts

EXPLICIT_ALGORITHM = "explicit"
VECTOR_DIMENSION = 16


class ExplicitListsError(ValueError):
    """The lists cannot be published: an item outside the catalog, a repeat, or a list deeper than top_n."""


def publish_lists(
    settings: Settings, lists: Mapping[str, Sequence[str]], catalog: Sequence[str], label: str, seed: int = 0
) -> str:
    """Publish ``lists`` (user id -> items, best first) over ``catalog`` and make it live; returns the version.

    Scores fall with the rank (1, 1/2, 1/3, ...), every reason is ``model``, the fallback is the
    catalog's first ``top_n`` items in the order given.
    """
    import pandas as pd

    catalog = [str(item) for item in catalog]
    check_publishable_ids("item", pd.Series(catalog))
    check_publishable_ids("user", pd.Series(list(lists)))
    row_of = {item: row for row, item in enumerate(catalog)}
    if len(row_of) != len(catalog):
        raise ExplicitListsError("the catalog repeats an item id")
    users = sorted(lists)
    user_column, rank_column, item_rows = [], [], []
    for user in users:
        items = list(lists[user])
        if len(items) > settings.publish_top_n:
            raise ExplicitListsError(
                f"user {user}: {len(items)} items, deeper than publish_top_n={settings.publish_top_n}"
            )
        if len(set(items)) != len(items):
            raise ExplicitListsError(f"user {user}: the list repeats an item")
        unknown = [item for item in items if item not in row_of]
        if unknown:
            raise ExplicitListsError(f"user {user}: {unknown[0]} is not in the catalog")
        user_column += [user] * len(items)
        rank_column += range(1, len(items) + 1)
        item_rows += [row_of[item] for item in items]
    ranks = np.asarray(rank_column, dtype=np.int16)
    rows = np.asarray(item_rows, dtype=np.int32)
    recs = pa.table(
        {
            "user_id": pa.array(user_column, pa.string()),
            "rank": ranks,
            "item_id": pa.array(np.asarray(catalog, dtype=object)[rows] if len(rows) else [], pa.string()),
            "score": (1.0 / ranks).astype(np.float32),
            "reason": pa.array(["model"] * len(rows), pa.string()),
            "item_row": rows,
        },
        schema=USER_RECS_SCHEMA,
    )
    top = min(settings.publish_top_n, len(catalog))
    fallback = pa.table(
        {
            "rank": np.arange(1, top + 1, dtype=np.int16),
            "item_id": catalog[:top],
            "score": (1.0 / np.arange(1, top + 1)).astype(np.float32),
            "reason": ["popular"] * top,
        }
    )
    items = pa.table({"item_id": catalog, "index_row": np.arange(len(catalog), dtype=np.int32)})
    vectors = np.random.default_rng(seed).normal(size=(len(catalog), VECTOR_DIMENSION)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

    root = settings.published_dir
    root.mkdir(parents=True, exist_ok=True)
    with publish_lock(root):
        remove_stale_staging(root)
        version = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{EXPLICIT_ALGORITHM}-{label}"
        with staged_version(root, version) as staging:
            pq.write_table(recs, staging / USER_RECS)
            pq.write_table(fallback, staging / FALLBACK)
            pq.write_table(items, staging / ITEMS)
            spec = write_item_index(vectors, staging / INDEX_FILE, settings)
            model = {"registered_model": None, "version": None, "run_id": None, "algorithm": EXPLICIT_ALGORITHM}
            counts = {"users": len(users), "user_rows": len(rows), "fallback_items": top, "indexed_items": len(catalog)}
            manifest = {
                "version": version,
                "created_at": datetime.now(UTC).isoformat(),
                "model": {**model, "label": label},
                "published_live": True,
                "data_snapshot": None,
                "top_n": settings.publish_top_n,
                "rules": {"applied": [], "parameters": {}},
                "item_index": spec,
                "counts": counts,
                "files": file_facts(staging),
            }
            seal_version(staging, manifest)
        switch_current(root, version)
        prune_versions(root, settings.publish_keep_versions)
    return version
