from __future__ import annotations

from fastapi import APIRouter, Request

from serving.dependencies import (
    answer_responses,
    checked_id,
    checked_k,
    excluded_ids,
    filters,
    live_publication,
    openapi_parameters,
)
from serving.failures import Reason
from serving.ids import id_violation
from serving.impressions.log import RECOMMENDATIONS
from serving.metrics import RECOMMENDATIONS_ENDPOINT
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
    responses=answer_responses(422, 503),
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
    store = state.store
    impressions = state.impressions  # None when the impression log is off
    request_id = state.request_ids.for_request(scope["headers"])
    sent = scope["path_params"]["user_id"]
    if state.pseudonymize is not None and id_violation(sent) is None:
        # Pseudonymisation on (serving/pseudonyms.py): everything below (session state, the lists, the deny
        # list, impression and failure logs) knows the user by the pseudonym; the answer names the id sent.
        scope["path_params"]["user_id"] = state.pseudonymize(sent)
    if scope["path_params"]["user_id"] in state.sessions.active:  # fresh session state: serving/session.py
        body = await session_answer(request, state.sessions, request_id)
        if body is not None:
            return JSONBytes(_as_sent(body, scope, sent), request_id=request_id)
    live = store.current
    if live is not None and live.fast_answer is not None and not store.blocked and not store.denied:
        # The common request (a known user, plain k, no blocklist) in one C call; None -> the path below.
        user_id = scope["path_params"]["user_id"]
        answer = live.fast_answer(user_id, scope["query_string"], request_id)
        if answer is not None:
            body, position, count = answer
            if impressions is not None:
                impressions.stored_slate(request_id, user_id, live, position, count)
            return JSONBytes(_as_sent(body, scope, sent), request_id=request_id)
    user_id = checked_id("user_id", request.path_params["user_id"])
    publication = live_publication(store)
    k = checked_k(request, publication)
    blocked, excluded_rows = filters(publication, store, excluded_ids(request))
    # A user forgotten since this publication was made gets the fallback, as an unknown user does.
    forgotten = store.denies(user_id)
    position = None if forgotten else publication.user_position(user_id)
    if position is None:  # the fallback list: counted, and logged for diagnosis (serving/failures.py)
        state.metrics.fallbacks.inc()
        if forgotten:  # never the id of someone forgotten
            state.failures.record(RECOMMENDATIONS_ENDPOINT, 200, Reason.FORGOTTEN_USER, publication.version)
        else:
            state.failures.record(
                RECOMMENDATIONS_ENDPOINT, 200, Reason.UNKNOWN_USER, publication.version, user_id=user_id
            )
    slate = publication.user_slate(position, k, blocked, excluded_rows)
    if impressions is not None and not forgotten:  # no impression holds the id of someone forgotten
        impressions.slate(request_id, RECOMMENDATIONS, user_id, publication, slate[0], slate[1], position is None)
    return JSONBytes(_as_sent(publication.user_body(user_id, request_id, slate), scope, sent), request_id=request_id)


def _as_sent(body: bytes, scope, sent: str) -> bytes:
    """The answer naming the id the app sent when it was looked up as its pseudonym (ids need no JSON escaping)."""
    looked_up = scope["path_params"]["user_id"]
    if looked_up == sent:
        return body
    prefix = b'{"user_id":"' + looked_up.encode() + b'"'
    return b'{"user_id":"' + sent.encode() + b'"' + body[len(prefix) :] if body.startswith(prefix) else body
