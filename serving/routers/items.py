from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from serving.dependencies import check_k, get_publication
from serving.publication import Publication
from serving.routers.recommendations import ID_PATTERN
from serving.schemas import Item, SimilarItems

router = APIRouter(prefix="/v1/items", tags=["items"])


@router.get("/{item_id}/similar", response_model=SimilarItems)
def similar_items(
    request: Request,
    item_id: Annotated[str, Path(pattern=ID_PATTERN)],
    publication: Annotated[Publication, Depends(get_publication)],
    k: Annotated[int, Query()] = 10,
) -> SimilarItems:
    """Nearest items by the published item index (inner product of normalised embeddings)."""
    check_k(k, publication)
    row = publication.item_row(item_id)
    if row is None:
        raise HTTPException(status_code=404, detail=f"item {item_id!r} is not in publication {publication.version}")
    recs = publication.similar(row, k, excluded=request.app.state.store.blocked)  # blocked since publication
    return SimilarItems(
        item_id=item_id,
        version=publication.version,
        items=[Item(item_id=r.item_id, score=r.score, reason=r.reason) for r in recs],
    )
