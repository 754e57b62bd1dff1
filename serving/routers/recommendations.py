from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from serving.dependencies import ID_PATTERN, check_k, excluded_items, filters, get_publication
from serving.publication import Publication
from serving.responses import JSONBytes
from serving.schemas import UserRecommendations

router = APIRouter(prefix="/v1/users", tags=["recommendations"])


@router.get("/{user_id}/recommendations", response_class=JSONBytes, responses={200: {"model": UserRecommendations}})
async def recommendations_for_user(
    request: Request,
    user_id: Annotated[str, Path(pattern=ID_PATTERN)],
    publication: Annotated[Publication, Depends(get_publication)],
    excluded: Annotated[list[str], Depends(excluded_items)],
    k: Annotated[int, Query()] = 10,
) -> JSONBytes:
    """The user's precomputed top-k; users the publication does not know get the fallback list, flagged.

    `exclude` removes items the app already shows, and items blocked since publication (the
    server's blocklist) go the same way; the list is then filled from further down the stored
    top-N, so the answer still has k items when N allows.
    """
    check_k(k, publication)
    blocked, excluded_rows = filters(publication, request.app.state.store, excluded)
    position = publication.user_position(user_id)
    if position is None:
        items = publication.fallback(k, blocked, excluded_rows)
        request.app.state.metrics.fallbacks.inc()
    else:
        items = publication.user_list(position, k, blocked, excluded_rows)
    body = {"user_id": user_id, "version": publication.version, "fallback": position is None, "items": items}
    return JSONBytes(body)
