from __future__ import annotations

from fastapi import APIRouter, Request

from serving.dependencies import (
    checked_id,
    checked_k,
    excluded_ids,
    filters,
    live_publication,
    openapi_parameters,
)
from serving.responses import JSONBytes
from serving.schemas import UserRecommendations

router = APIRouter(prefix="/v1/users", tags=["recommendations"])


@router.get(
    "/{user_id}/recommendations",
    response_class=JSONBytes,
    responses={200: {"model": UserRecommendations}},
    openapi_extra=openapi_parameters("user_id"),
)
async def recommendations_for_user(request: Request) -> JSONBytes:
    """The user's precomputed top-k (`k`, default 10); unknown users get the fallback list, flagged.

    `exclude` (item ids the app already shows, repeated or comma-separated) removes items, and
    items blocked since publication (the server's blocklist) go the same way; the list is then
    filled from further down the stored top-N, so the answer still has k items when N allows.
    """
    scope = request.scope
    store = scope["app"].state.store
    live = store.current
    if live is not None and live.fast_answer is not None and not store.blocked:
        # The common request (a known user, plain k, no blocklist) in one C call; None -> the path below.
        body = live.fast_answer(scope["path_params"]["user_id"], scope["query_string"])
        if body is not None:
            return JSONBytes(body)
    user_id = checked_id("user_id", request.path_params["user_id"])
    publication = live_publication(store)
    k = checked_k(request, publication)
    blocked, excluded_rows = filters(publication, store, excluded_ids(request))
    position = publication.user_position(user_id)
    if position is None:
        request.app.state.metrics.fallbacks.inc()
    return JSONBytes(publication.user_answer(user_id, position, k, blocked, excluded_rows))
