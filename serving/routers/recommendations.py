from __future__ import annotations

from fastapi import APIRouter, Request

from serving.dependencies import (
    checked_id,
    checked_k,
    error_responses,
    excluded_ids,
    filters,
    live_publication,
    openapi_parameters,
)
from serving.responses import JSONBytes
from serving.schemas import UserRecommendations
from serving.session import session_answer

router = APIRouter(prefix="/v1/users", tags=["recommendations"])


# The declaration documents the endpoint; requests reach the function through Starlette's plain
# wrapper (serving.main._serve_lean), so response_model is never applied to an answer.
@router.get(
    "/{user_id}/recommendations",
    response_class=JSONBytes,
    response_model=UserRecommendations,
    responses=error_responses(422, 503),
    summary="Recommendations for a user",
    description=(
        "The user's top `k` items from the live publication, best first. A user the publication does "
        "not know gets the popularity list, flagged with `fallback: true`. Items named in `exclude` and "
        "items blocked since the publication are left out and the list is filled from further down. "
        "A user with recent events (sent to `POST /v1/events`) gets neighbours of those items blended in "
        "(reason `session:<item>`), without the items bought in the session; a visitor the publication "
        "does not know gets session-based items instead of the popularity list."
    ),
    openapi_extra=openapi_parameters("user_id", "The user, as the app's events name it."),
)
async def recommendations_for_user(request: Request) -> JSONBytes:
    # The stored top-N is filtered, never re-ranked: `exclude` and the server's blocklist remove
    # items and the list is refilled from further down the stored N.
    scope = request.scope
    state = scope["app"].state
    if scope["path_params"]["user_id"] in state.sessions.active:  # fresh session state: serving/session.py
        body = await session_answer(request, state.sessions)
        if body is not None:
            return JSONBytes(body)
    store = state.store
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
