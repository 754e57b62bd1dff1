from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from serving.dependencies import check_k, get_publication
from serving.publication import Publication
from serving.schemas import Item, UserRecommendations

router = APIRouter(prefix="/v1/users", tags=["recommendations"])

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"


@router.get("/{user_id}/recommendations", response_model=UserRecommendations)
def recommendations_for_user(
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
    publication: Annotated[Publication, Depends(get_publication)],
    k: Annotated[int, Query()] = 10,
) -> UserRecommendations:
    """The user's precomputed top-k; users the publication does not know get the fallback list, flagged."""
    check_k(k, publication)
    recs = publication.for_user(user_id, k)
    fallback = recs is None
    if fallback:
        recs = publication.fallback(k)
    return UserRecommendations(
        user_id=user_id,
        version=publication.version,
        fallback=fallback,
        items=[Item(item_id=r.item_id, score=r.score, reason=r.reason) for r in recs],
    )
