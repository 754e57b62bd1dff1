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
from serving.exploration import EXPLORE_REASON, explore, propensity_of_ranked, swapped_slots
from serving.failures import Reason
from serving.ids import id_violation
from serving.impressions.log import RECOMMENDATIONS
from serving.metrics import CANARY_SCOPE_KEY, RECOMMENDATIONS_ENDPOINT
from serving.publication import with_arms
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
    values = scope["app"].state._state  # app.state's own dict: a lookup per value instead of a __getattr__ call
    request_id = values["request_ids"].for_request(scope["headers"])
    sent = scope["path_params"]["user_id"]
    if values["pseudonymize"] is None and not values["router"].routes and sent not in values["sessions"].active:
        # The common request (no pseudonyms, no experiment, no session state) in the fewest steps: the glue
        # between the HTTP server and the C answer is what a request costs beyond the no-op's.
        store = values["store"]
        publication = store.current
        if (
            publication is not None and publication.fast_answer is not None
            and not values["exploration_epsilon"] and not store.blocked and not store.denied
        ):  # fmt: skip
            answer = publication.fast_answer(sent, scope["query_string"], request_id)
            if answer is not None:
                impressions = values["impressions"]
                if impressions is not None:
                    impressions.stored_slate(request_id, sent, publication, answer[1], answer[2])
                return JSONBytes(answer[0], request_id=request_id)
    state = scope["app"].state
    store = state.store
    if state.pseudonymize is not None and id_violation(sent) is None:
        # Pseudonymisation on (serving/pseudonyms.py): everything below (assignment, session state, the lists,
        # the deny list, impression and failure logs) knows the user by the pseudonym; the answer names the id sent.
        scope["path_params"]["user_id"] = state.pseudonymize(sent)
    user_id = scope["path_params"]["user_id"]
    router = state.router
    arm = router.route(user_id) if router.routes else None  # serving/variants.py: None outside experiments
    publication = store.current if arm is None or arm.publication is None else arm.publication
    if arm is not None and arm.monitor is not None:  # a canary's answer: its latency and status feed the guardrails
        scope[CANARY_SCOPE_KEY] = arm.monitor
    if user_id in state.sessions.active and (arm is None or arm.publication is not None):
        # fresh session state (serving/session.py), blended into the user's publication; never for the holdback
        body = await session_answer(request, state.sessions, request_id, publication, arm)
        if body is not None:
            if arm is not None:
                body = with_arms(body, arm.arms)
                if state.impressions is not None and arm.shadows:
                    _log_shadows(request, store, state.impressions, arm, user_id, request_id, publication)
                if arm.clicks is not None:
                    arm.clicks.served(arm.variant, request_id)
            return JSONBytes(_as_sent(body, scope, sent), request_id=request_id)
    body = _answer(request, state, publication, user_id, request_id, arm)
    if arm is not None and arm.clicks is not None:  # a canary's or its control's slate: clicks on it judge the CTR
        arm.clicks.served(arm.variant, request_id)
    return JSONBytes(_as_sent(body, scope, sent), request_id=request_id)


def _answer(request: Request, state, publication, user_id: str, request_id: bytes, arm) -> bytes:
    """The answer from `publication` (the live one, or the user's variant's), explored and logged.

    `arm` None: outside any experiment; an arm without a publication is the holdback (the fallback list).
    """
    scope = request.scope
    store = state.store
    impressions = state.impressions  # None when the impression log is off
    epsilon = state.exploration_epsilon
    experiment, variant = (None, None) if arm is None else (arm.experiment, arm.variant)
    holdback = arm is not None and arm.publication is None
    slots = None  # the slots exploration swaps, once drawn
    if (
        publication is not None and publication.fast_answer is not None
        and not holdback and not store.blocked and not store.denied
    ):  # fmt: skip
        # The common request (a known user, plain k, no blocklist) in one C call; None -> the path below.
        answer = publication.fast_answer(user_id, scope["query_string"], request_id)
        if answer is not None:
            body, position, count = answer
            if epsilon:
                slots = swapped_slots(count, epsilon)
            if not slots:  # shown as ranked (always, without exploration)
                if impressions is not None:
                    propensity = propensity_of_ranked(len(publication.item_ids), count, epsilon) if epsilon else 1.0
                    impressions.stored_slate(request_id, user_id, publication, position, count, experiment, variant,
                                             propensity)  # fmt: skip
                    if arm is not None and arm.shadows:
                        _log_shadows(request, store, impressions, arm, user_id, request_id, publication)
                return body if arm is None else with_arms(body, arm.arms)
    user_id = checked_id("user_id", request.path_params["user_id"])
    publication = live_publication(store) if publication is None else publication
    k = checked_k(request, publication)
    blocked, excluded_rows = filters(publication, store, excluded_ids(request))
    # A user forgotten since this publication was made gets the fallback, as an unknown user does.
    forgotten = store.denies(user_id)
    position = None if forgotten or holdback else publication.user_position(user_id)
    if position is None and not holdback:  # the fallback list: counted, and logged for diagnosis (serving/failures.py)
        state.metrics.fallbacks.inc()
        if forgotten:  # never the id of someone forgotten
            state.failures.record(RECOMMENDATIONS_ENDPOINT, 200, Reason.FORGOTTEN_USER, publication.version)
        else:
            state.failures.record(
                RECOMMENDATIONS_ENDPOINT, 200, Reason.UNKNOWN_USER, publication.version, user_id=user_id
            )
    rows, scores, codes = publication.user_slate(position, k, blocked, excluded_rows)
    propensities = 1.0
    if epsilon:
        slots = swapped_slots(len(rows), epsilon) if slots is None else slots
        shown, scores, propensities = explore(rows, scores, len(publication.item_ids), blocked, excluded_rows,
                                              epsilon, slots)  # fmt: skip
        if shown is not rows:  # some slots swapped: the answer names them `explore`
            reasons = publication.slate_reasons(codes, len(rows))
            for slot in slots:
                reasons[slot] = EXPLORE_REASON
            rows = shown
            body = publication.answer_with_reasons(
                user_id, request_id, rows.tolist(), scores.tolist(), reasons, fallback=position is None
            )
        else:
            body = publication.user_body(user_id, request_id, (rows, scores, codes))
    else:
        body = publication.user_body(user_id, request_id, (rows, scores, codes))
    if impressions is not None and not forgotten:  # no impression holds the id of someone forgotten
        impressions.slate(request_id, RECOMMENDATIONS, user_id, publication, rows, scores, position is None,
                          experiment, variant, propensities)  # fmt: skip
        if arm is not None and arm.shadows:
            _log_shadows(request, store, impressions, arm, user_id, request_id, publication)
    return body if arm is None else with_arms(body, arm.arms)


def _log_shadows(request: Request, store, impressions, arm, user_id: str, request_id: bytes, publication) -> None:
    """Queue each shadow variant's slate for this request; the impression writer cuts it (never shown)."""
    k = checked_k(request, publication)
    excluded = excluded_ids(request)
    for variant, shadow in arm.shadows:
        impressions.shadow(request_id, user_id, shadow, k, store.blocked, excluded, arm.experiment, variant)


def _as_sent(body: bytes, scope, sent: str) -> bytes:
    """The answer naming the id the app sent when it was looked up as its pseudonym (ids need no JSON escaping)."""
    looked_up = scope["path_params"]["user_id"]
    if looked_up == sent:
        return body
    prefix = b'{"user_id":"' + looked_up.encode() + b'"'
    return b'{"user_id":"' + sent.encode() + b'"' + body[len(prefix) :] if body.startswith(prefix) else body
