"""Request-scoped access to the live publication."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from serving.publication import Publication, PublicationStore


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
