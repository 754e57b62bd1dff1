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
from serving.ids import id_violation
from serving.responses import JSONBytes
from serving.schemas import UserRecommendations

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
        "items blocked since the publication are left out and the list is filled from further down."
    ),
    openapi_extra=openapi_parameters("user_id", "The user, as the app's events name it."),
)
async def recommendations_for_user(request: Request) -> JSONBytes:
    # The stored top-N is filtered, never re-ranked: `exclude` and the server's blocklist remove
    # items and the list is refilled from further down the stored N.
    scope = request.scope
    state = scope["app"].state
    store = state.store
    live = store.current
    sent = scope["path_params"]["user_id"]
    # Pseudonymisation on: the publication knows the user by the pseudonym of the id the app sends
    # (a valid id only: an invalid one still gets its 422 below); the answer names the id sent.
    lookup = sent if state.pseudonymize is None or id_violation(sent) else state.pseudonymize(sent)
    if live is not None and live.fast_answer is not None and not store.blocked and not store.denied:
        # The common request (a known user, plain k, no blocklist) in one C call; None -> the path below.
        body = live.fast_answer(lookup, scope["query_string"])
        if body is not None:
            if lookup is not sent:  # the body starts {"user_id":"<lookup>" (ids need no JSON escaping)
                body = b'{"user_id":"' + sent.encode() + body[12 + len(lookup) :]
            return JSONBytes(body)
    user_id = checked_id("user_id", sent)
    publication = live_publication(store)
    k = checked_k(request, publication)
    blocked, excluded_rows = filters(publication, store, excluded_ids(request))
    # A user forgotten since this publication was made gets the fallback, as an unknown user does.
    position = None if store.denies(lookup) else publication.user_position(lookup)
    if position is None:
        request.app.state.metrics.fallbacks.inc()
    return JSONBytes(publication.user_answer(user_id, position, k, blocked, excluded_rows))
