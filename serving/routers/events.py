from __future__ import annotations

import hmac
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPBearer

from serving.collector import CollectorUnavailable
from serving.collector.intake import JSON_TYPES, NDJSON_TYPES, BadBody, read_events
from serving.errors import ApiError, record_failure
from serving.events import REASON_DESCRIPTIONS, EventWindow
from serving.failures import Reason
from serving.responses import JSONBytes
from serving.schemas import CollectedEvents, ErrorDetail

router = APIRouter(prefix="/v1", tags=["events"])
log = logging.getLogger(__name__)
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": "Bearer"}

ANSWERS = {
    207: "Some events were accepted (stored durably) and some refused: `errors` lists each refused one.",
    400: "The body holds no events to judge: not JSON, not UTF-8, or empty. Nothing was stored.",
    401: "No app key, or a wrong one (`Authorization: Bearer <key>`).",
    413: "The body is longer than the server's limit. Nothing was stored.",
    415: "The content-type is neither JSON nor NDJSON.",
    422: "Every event was refused: `errors` lists each one with its reason. Nothing was stored.",
    503: "The collector is off (no app key configured) or cannot store events now. Nothing was acknowledged.",
}
EVENT_EXAMPLE = {
    "event_id": "e-000123",
    "user_id": "u000754",
    "item_id": "i000010",
    "event_type": "click",
    "event_ts": "2026-01-05T10:00:00Z",
    "session_id": "s-42",
    "context": {"device": "mobile", "request_id": "r-1"},
}


def _responses() -> dict:
    statuses = {
        status: {"model": CollectedEvents if status in (207, 422) else ErrorDetail, "description": text}
        for status, text in ANSWERS.items()
    }
    return statuses


def _request_body() -> dict:
    reasons = "\n".join(f"- `{code}`: {text}" for code, text in REASON_DESCRIPTIONS.items())
    one_event = {
        "type": "object",
        "required": ["event_id", "user_id", "item_id", "event_type", "event_ts"],
        "additionalProperties": True,
        "example": EVENT_EXAMPLE,
    }
    batch = {"type": "array", "items": one_event}
    return {
        "requestBody": {
            "required": True,
            "description": "One event, a JSON array of events, or NDJSON (one event per line). Reason codes:\n"
            + reasons,
            "content": {
                **{kind: {"schema": {"oneOf": [one_event, batch]}} for kind in JSON_TYPES},
                **{kind: {"schema": {"type": "string"}} for kind in NDJSON_TYPES},
            },
        },
    }


# Served through Starlette's plain wrapper like the other hot endpoints (serving.main._serve_lean).
@router.post(
    "/events",
    response_class=JSONBytes,
    response_model=CollectedEvents,
    responses=_responses(),
    summary="Send events",
    description=(
        "Stores events (one, a batch, or NDJSON) and answers once every accepted event is stored durably. "
        "Each event is checked against the event contract on its own: 200 when all are accepted, 207 when "
        "some are refused (the others are stored), 422 when all are. Each refused event is listed with its "
        "`index` in the request and a reason code; nothing is accepted without being stored, and a refused "
        "event is never stored, so an app re-sends exactly what `errors` lists, once fixed. Re-sending an "
        "event after an error or a timeout is safe: ingest keeps one event per `event_id`."
    ),
    openapi_extra=_request_body(),
    # Documents the app key in OpenAPI; the lean wrapper never runs it (the key is checked below).
    dependencies=[Depends(HTTPBearer(scheme_name="appKey", description="The app key (RECFORGE_COLLECTOR_APP_KEY)."))],
)
async def collect_events(request: Request) -> JSONBytes:
    state = request.app.state
    collector = state.collector
    if collector is None:
        raise ApiError(
            503, Reason.COLLECTOR_OFF, "the collector is off: set RECFORGE_COLLECTOR_APP_KEY (or _FILE) to turn it on"
        )
    key = state.collector_key
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
        raise ApiError(
            401,
            Reason.UNAUTHORIZED,
            "a valid app key is required: Authorization: Bearer <key>",
            headers=UNAUTHORIZED_HEADERS,
        )
    settings = state.collector_settings
    now = datetime.now(UTC)
    window = EventWindow.for_arrival(now, settings.late_arrival_days, settings.future_tolerance_seconds)
    try:
        intake = read_events(
            await request.body(), request.headers.get("content-type"), window, settings.ingest_max_line_bytes,
            state.pseudonymize,
        )  # fmt: skip
    except BadBody as error:
        raise ApiError(error.status, Reason.INVALID_EVENTS, str(error)) from None
    metrics = state.metrics
    if intake.lines:
        try:
            await collector.append(window.landing_date, intake.lines)
        except CollectorUnavailable as error:
            metrics.collector_unavailable(len(intake.lines))
            raise ApiError(
                503, Reason.COLLECTOR_UNAVAILABLE, f"{error}; nothing of this request was acknowledged: send it again"
            ) from None
        await _update_sessions(state.sessions, intake.lines)
        if state.router.counting_clicks:  # a canary's CTR guardrail: clicks on the slates this process served
            state.router.observe_outcomes(intake.lines)
    metrics.collected(len(intake.lines), intake.errors)
    status = 200 if not intake.errors else 207 if intake.lines else 422
    if status == 422:  # an answer, not an exception: logged here
        record_failure(request, 422, Reason.INVALID_EVENTS, f"all {len(intake.errors)} event(s) rejected")
    return JSONBytes(
        {"accepted": len(intake.lines), "rejected": len(intake.errors), "errors": intake.errors}, status_code=status
    )


async def _update_sessions(sessions, lines: list[bytes]) -> None:
    """Durable events reach the session store (serving/session.py); its failure never un-acknowledges them."""
    try:
        await sessions.record(lines)
    except Exception:  # the events are stored: the next answer merely misses them
        log.exception("sessions: could not record %d acknowledged event(s)", len(lines))
