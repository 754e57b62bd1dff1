from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from serving.dependencies import ID_PATTERN, check_k, excluded_items, filters, get_publication
from serving.publication import Publication
from serving.responses import JSONBytes
from serving.schemas import SimilarItems

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.get("/{item_id}/similar", response_class=JSONBytes, responses={200: {"model": SimilarItems}})
def similar_items(
    request: Request,
    item_id: Annotated[str, Path(pattern=ID_PATTERN)],
    publication: Annotated[Publication, Depends(get_publication)],
    excluded: Annotated[list[str], Depends(excluded_items)],
    k: Annotated[int, Query()] = 10,
) -> JSONBytes:
    """Nearest items by the published item index (cosine of the item embeddings).

    A plain ``def``: the FAISS search runs in the thread pool (it releases the GIL), so a slow
    exact search over a large catalog never stalls the event loop that serves the other endpoints.
    """
    check_k(k, publication)
    row = publication.item_rows.get(item_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"item {item_id!r} is not in publication {publication.version}")
    blocked, excluded_rows = filters(publication, request.app.state.store, excluded)
    items = publication.similar(row, k, blocked, excluded_rows)
    return JSONBytes({"item_id": item_id, "version": publication.version, "items": items})
