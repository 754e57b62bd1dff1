"""Request-scoped access to the live publication and the checks every endpoint shares."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import Depends, HTTPException, Query, Request

from serving.publication import Publication
from serving.store import PublicationStore

# Ids are opaque strings of a safe alphabet: nothing in a request can name a path.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"
MAX_EXCLUDED = 200


def get_store(request: Request) -> PublicationStore:
    return request.app.state.store


def get_publication(store: Annotated[PublicationStore, Depends(get_store)]) -> Publication:
    publication = store.current
    if publication is None:
        raise HTTPException(status_code=503, detail="no publication loaded yet")
    return publication


def check_k(k: int, publication: Publication) -> None:
    if not 1 <= k <= publication.top_n:
        raise HTTPException(
            status_code=422, detail=f"k must be between 1 and {publication.top_n} for publication {publication.version}"
        )


def excluded_items(
    exclude: Annotated[
        list[str] | None, Query(description="Item ids the app already shows (repeated or comma-separated)")
    ] = None,
) -> list[str]:
    ids = [part for value in exclude or [] for part in value.split(",") if part]
    if len(ids) > MAX_EXCLUDED:
        raise HTTPException(status_code=422, detail=f"exclude names {len(ids)} items; at most {MAX_EXCLUDED}")
    return ids


def filters(publication: Publication, store: PublicationStore, excluded: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(blocked mask, excluded rows): the server's blocklist since publication and the app's exclusions."""
    return publication.blocked_mask(store.blocked), publication.excluded_rows(excluded)
