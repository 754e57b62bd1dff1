from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from serving.dependencies import check_k, get_publication
from serving.publication import Publication
from serving.schemas import Item, UserRecommendations

router = APIRouter(prefix="/v1/users", tags=["recommendations"])

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"


@router.get("/{user_id}/recommendations", response_model=UserRecommendations)
def recommendations_for_user(
    request: Request,
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
    publication: Annotated[Publication, Depends(get_publication)],
    k: Annotated[int, Query()] = 10,
    exclude: Annotated[list[str] | None, Query(max_length=200, description="Item ids the app already shows")] = None,
) -> UserRecommendations:
    """The user's precomputed top-k; users the publication does not know get the fallback list, flagged.

    `exclude` (repeated or comma-separated) removes items the app already shows; the list is then
    filled from further down the stored top-N, so the answer still has k items when N allows.
    """
    check_k(k, publication)
    # Items blocked since publication (the server's blocklist) go the same way as the app's exclusions.
    excluded = {part for value in exclude or [] for part in value.split(",") if part} | request.app.state.store.blocked
    recs = publication.for_user(user_id, k, excluded)
    fallback = recs is None
    if fallback:
        recs = publication.fallback(k, excluded)
        request.app.state.metrics.fallbacks.inc()
    return UserRecommendations(
        user_id=user_id,
        version=publication.version,
        fallback=fallback,
        items=[Item(item_id=r.item_id, score=r.score, reason=r.reason) for r in recs],
    )
