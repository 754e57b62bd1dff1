"""The event contract: what one event may be, defined once for the collector and ingest.

An event is a JSON object with the canonical fields (``EVENT_FIELDS``); every other key is
kept and ends up in its ``context`` at ingest. Ingest applies these rules in SQL
(``pipelines/ingest/sql/classify_events.sql``, fed ``EVENT_TYPES`` and the id contract as
parameters; ``pipelines/ingest/sources.py`` reads ``REQUIRED_FIELDS``); the collector
(``POST /v1/events``) applies them here, per event, before anything is written, so an app learns
at once why an event was refused instead of finding it in quarantine a day later.

``event_reason`` returns the same reason code as the SQL for the same object, in the same order
(the first rule that fails wins): the read rules of the JSONL adapter (``line_too_long``,
``invalid_utf8``, ``malformed_json``, ``schema_mismatch``) then the row rules (``ROW_REASONS``).
``tests/ingest/test_event_contract.py`` runs one set of events through both and compares.
The collector is stricter in two documented places and never looser:
- ``event_ts`` must be an RFC 3339 timestamp (``2026-01-05T10:00:00Z``, ``...+02:00``,
  ``2026-01-05 10:00:00.123``; no offset means UTC, as in ingest). DuckDB also reads forms such as
  ``2026-1-5 10:00 Europe/Paris``; the collector refuses those as ``bad_timestamp``.
- ids (``event_id``, ``user_id``, ``item_id``) are JSON strings or integers (an integer becomes its
  decimal text, as DuckDB reads it); a float id, a ``value`` given as text and a ``session_id``
  that is an object or a list are ``schema_mismatch``.
The rules that need more than one event (``duplicate_event_id``, ``bot_suspected``,
``retry_duplicate``) stay in ingest, where a whole batch is seen.

The time window is the landing day's, the day the event arrives (``EventWindow.for_arrival``):
no later than ``future_tolerance_seconds`` after now (ingest allows up to the end of the landing
day plus that tolerance, which is later) and no earlier than midnight of the landing day minus
``late_arrival_days``. Both settings are defined once (``FUTURE_TOLERANCE_SECONDS``,
``LATE_ARRIVAL_DAYS`` below) and read by pipelines.settings and serving.config alike.

Consent (``CONSENT_PATH``): an event whose ``context`` holds ``{"consent": {"personalization": false}}``
says its user withheld consent for personalisation (``true``: gave it; absent: no signal; the
strings ``"true"``/``"false"`` read the same, any other value is no signal). The event is accepted
like any other (it is still the user's activity, and retention and forgetting reach it); the
warehouse decides per user by the latest signal (``dbt_project/models/intermediate/
int_consent_withheld_users.sql``): such a user's events stay out of every mart, so out of training,
are counted in ``marts.consent_withheld_users``, and publication gives the user the fallback list.

This module imports only the standard library, pydantic's ``Field`` and the id contract, so
every side (and a DAG file at parse time, through ``pipelines.contract``) can import it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pydantic import Field

from serving.ids import ID_CHARACTERS_REGEX, MAX_ID_LENGTH

__all__ = [
    "EVENT_FIELDS",
    "EVENT_TYPES",
    "FUTURE_TOLERANCE_SECONDS",
    "LATE_ARRIVAL_DAYS",
    "MAX_LINE_BYTES",
    "OPTIONAL_FIELDS",
    "READ_REASONS",
    "REASON_DESCRIPTIONS",
    "REQUIRED_FIELDS",
    "ROW_REASONS",
    "CONSENT_PATH",
    "OUTCOME_REQUEST_ID",
    "EventWindow",
    "event_reason",
]

# The canonical event types (docs/architecture.md, "Event contract"). Ingest quarantines any other
# type as ``unknown_event_type``; the dbt signal weights and the GX raw_events suite name the same set.
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating")
_EVENT_TYPES = frozenset(EVENT_TYPES)

# Where an event's context says whether its user consents to personalisation (module docstring);
# dbt_project/macros/consent.sql reads the same path.
CONSENT_PATH = ("consent", "personalization")

# The key in an outcome event's context naming the served slate (the answer's request id) it follows:
# the CTR guardrail (serving/variants.py), the traffic simulator's outcomes and the slate_items mart
# (dbt_project/models/marts/slate_items.sql, checked by tests/test_contract.py) all read this one.
OUTCOME_REQUEST_ID = "request_id"

REQUIRED_FIELDS = ("event_id", "user_id", "item_id", "event_type", "event_ts")
OPTIONAL_FIELDS = ("value", "session_id", "context")
EVENT_FIELDS = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)

# Why a line could not be read as an event at all (the JSONL adapter's parse errors).
READ_REASONS = ("line_too_long", "invalid_utf8", "malformed_json", "schema_mismatch")
# Why a readable event is refused, in the order the rules are applied (first failure wins).
ROW_REASONS = (
    "missing_event_id",
    "missing_user_id",
    "missing_item_id",
    "id_too_long",
    "id_bad_characters",
    "unknown_event_type",
    "non_finite_value",
    "bad_timestamp",
    "future_timestamp",
    "late_beyond_window",
)

# What each code means, as the collector tells an app (and the docs list).
REASON_DESCRIPTIONS = {
    "line_too_long": "the event is longer than RECFORGE_INGEST_MAX_LINE_BYTES",
    "invalid_utf8": "the line is not UTF-8",
    "malformed_json": "the line is not JSON",
    "schema_mismatch": "not a JSON object, or a field of the wrong type (ids: strings or integers; event_type, "
    "event_ts: strings; value: a number; context: an object)",
    "missing_event_id": "event_id is missing or blank",
    "missing_user_id": "user_id is missing or blank",
    "missing_item_id": "item_id is missing or blank",
    "id_too_long": f"user_id or item_id is longer than {MAX_ID_LENGTH} characters",
    "id_bad_characters": f"user_id or item_id has a character outside {ID_CHARACTERS_REGEX}",
    "unknown_event_type": f"event_type is not one of {', '.join(EVENT_TYPES)}",
    "non_finite_value": "value is not a finite number",
    "bad_timestamp": "event_ts is missing or not an RFC 3339 timestamp (2026-01-05T10:00:00Z)",
    "future_timestamp": "event_ts is later than now plus RECFORGE_FUTURE_TOLERANCE_SECONDS",
    "late_beyond_window": "event_ts is earlier than RECFORGE_LATE_ARRIVAL_DAYS before today (UTC)",
}

# The event window and line settings, declared once for pipelines.settings.Settings and serving.config.ServingSettings.
LATE_ARRIVAL_DAYS = Field(
    default=3, ge=0, le=3650, description="Events may arrive this many days after they happened and still be accepted."
)
MAX_LINE_BYTES = Field(
    default=1 << 20,
    ge=1024,
    le=1 << 30,
    description="A JSONL line or CSV row longer than this (bytes, 1 KiB..1 GiB) is quarantined as "
    "line_too_long, and never held whole in memory; the collector refuses a longer event.",
)
FUTURE_TOLERANCE_SECONDS = Field(
    default=300,
    ge=0,
    le=86400,
    description="Events stamped later than the batch's interval end (the collector: now) plus this are 'future'.",
)

# RFC 3339 as DuckDB and Python read it alike: date, 'T' or ' ', time with seconds, an optional
# fraction (DuckDB and Python both keep microseconds and drop further digits), an optional offset.
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})?", re.ASCII)
_ID = re.compile(ID_CHARACTERS_REGEX, re.ASCII)
# JSON integers DuckDB reads as BIGINT or UBIGINT (their text is the id); bigger ones become DOUBLE.
_INT_RANGE = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class EventWindow:
    """The instants an event may carry: from `earliest` (inclusive) to `latest` (inclusive)."""

    earliest: datetime
    latest: datetime
    landing_date: date

    @classmethod
    def for_arrival(cls, now: datetime, late_arrival_days: int, future_tolerance_seconds: int) -> EventWindow:
        """The window of an event arriving at `now`: its landing day is now's UTC day."""
        now = now.astimezone(UTC)
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return cls(
            earliest=midnight - timedelta(days=late_arrival_days),
            latest=now + timedelta(seconds=future_tolerance_seconds),
            landing_date=midnight.date(),
        )


def parse_event_ts(text: str) -> datetime | None:
    """The instant of an RFC 3339 timestamp (no offset: UTC), or None if it is not one."""
    if not _TIMESTAMP.fullmatch(text):
        return None
    try:
        parsed = datetime.fromisoformat(text)  # Python 3.11 reads every form the pattern lets through
    except ValueError:  # a day or an hour that does not exist: 2026-02-30, 25:00
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def _id_text(value) -> str | None | bool:
    """An id field as ingest reads it: its text, None when absent, False when of a type it refuses."""
    if value is None or type(value) is str:
        return value
    if type(value) is int and _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        return str(value)
    return False


def _missing(text: str | None) -> bool:
    return text is None or not text.strip(" ")  # as SQL's trim(): only spaces


def event_reason(event, window: EventWindow) -> str | None:
    """Why ingest would refuse `event` (a parsed JSON value) on its own, or None if it is accepted.

    The first failing rule's code, in the order of ``READ_REASONS`` (after parsing) and ``ROW_REASONS``.
    """
    if type(event) is not dict:
        return "schema_mismatch"
    get = event.get
    event_id, user_id, item_id = _id_text(get("event_id")), _id_text(get("user_id")), _id_text(get("item_id"))
    event_type, event_ts, value, context = get("event_type"), get("event_ts"), get("value"), get("context")
    if (
        event_id is False
        or user_id is False
        or item_id is False
        or (event_type is not None and type(event_type) is not str)
        or (event_ts is not None and type(event_ts) is not str)
        or (context is not None and type(context) is not dict)
        or (value is not None and type(value) not in (int, float))  # bool is no number here
        or type(get("session_id")) in (dict, list)
    ):
        return "schema_mismatch"
    if _missing(event_id):
        return "missing_event_id"
    if _missing(user_id):
        return "missing_user_id"
    if _missing(item_id):
        return "missing_item_id"
    if len(user_id) > MAX_ID_LENGTH or len(item_id) > MAX_ID_LENGTH:
        return "id_too_long"
    if not _ID.fullmatch(user_id) or not _ID.fullmatch(item_id):
        return "id_bad_characters"
    if event_type not in _EVENT_TYPES:
        return "unknown_event_type"
    if type(value) is float and not math.isfinite(value):
        return "non_finite_value"
    instant = parse_event_ts(event_ts) if event_ts is not None else None
    if instant is None:
        return "bad_timestamp"
    if instant > window.latest:
        return "future_timestamp"
    if instant < window.earliest:
        return "late_beyond_window"
    return None
