"""Reading a request body into events and checking each against the event contract.

A body is one event (a JSON object), a batch (a JSON array of objects), or NDJSON (one object
per line; blank lines are no events). Each event is judged alone (``serving.events.event_reason``)
and either accepted, as the one JSON line that will be stored, or refused with its position in the
request (``index``, from 0; for NDJSON also its 1-based ``line``), its reason code and what the
code means. Only a body that cannot be split into events at all (not JSON, not UTF-8, no events)
refuses the whole request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson

from serving.events import REASON_DESCRIPTIONS, EventWindow, event_reason

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


class BadBody(ValueError):
    """A body that holds no readable events; `status` is the answer (400 or 415)."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


@dataclass
class Intake:
    """What a request held: the accepted events as JSON lines, and one entry per refused event."""

    lines: list[bytes] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    pseudonymize: object = None  # a serving.pseudonyms.Pseudonymizer, or None

    def refuse(self, index: int, reason: str, line: int | None = None) -> None:
        error = {"index": index, "reason": reason, "detail": REASON_DESCRIPTIONS[reason]}
        if line is not None:
            error["line"] = line
        self.errors.append(error)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class _NotJSON(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _loads(raw: bytes):
    """The JSON value of `raw`. orjson first; a number too large for a double (1e400) is still JSON
    to ingest (it reads it as infinity and refuses it as non_finite_value), so Python's reader
    has the last word. NaN / Infinity literals are not JSON for either."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _NotJSON("invalid_utf8", "not UTF-8") from None
        try:
            return json.loads(text, parse_constant=_refuse_constant)
        except ValueError:
            raise _NotJSON("malformed_json", str(error)) from None


def media_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def read_events(
    body: bytes, content_type: str | None, window: EventWindow, max_line_bytes: int, pseudonymize=None
) -> Intake:
    """Split `body` into events and judge each; raises BadBody when there are no events to judge.

    `pseudonymize` (serving.pseudonyms.Pseudonymizer, when pseudonymisation is on): each accepted
    event's user_id is stored as its pseudonym, as ingest would write it (ingest keeps a pseudonym).
    """
    kind = media_type(content_type)
    intake = Intake(pseudonymize=pseudonymize)
    if kind in NDJSON_TYPES:
        index = 0
        for number, raw in enumerate(body.split(b"\n"), start=1):
            raw = raw.removesuffix(b"\r")
            if not raw.strip():
                continue
            if len(raw) > max_line_bytes:
                intake.refuse(index, "line_too_long", number)
            else:
                try:
                    _judge(intake, index, _loads(raw), window, max_line_bytes, number)
                except _NotJSON as error:
                    intake.refuse(index, error.reason, number)
            index += 1
        if index == 0:
            raise BadBody(400, "the body holds no events (NDJSON: one JSON object per line)")
        return intake
    if kind not in JSON_TYPES:
        accepted = ", ".join((*JSON_TYPES, *NDJSON_TYPES))
        raise BadBody(415, f"content-type {kind or 'missing'!r}: send one of {accepted}")
    try:
        document = _loads(body)
    except _NotJSON as error:
        detail = f"the body is not JSON ({error}); NDJSON bodies need content-type {NDJSON_TYPES[0]}"
        raise BadBody(400, detail) from None
    if type(document) is dict:
        document = [document]
    elif type(document) is not list:
        raise BadBody(400, "a JSON body is one event (an object) or a batch (an array of objects)")
    if not document:
        raise BadBody(400, "the body holds no events (an empty array)")
    for index, event in enumerate(document):
        _judge(intake, index, event, window, max_line_bytes, None)
    return intake


def _judge(intake: Intake, index: int, event, window: EventWindow, max_line_bytes: int, line: int | None) -> None:
    reason = event_reason(event, window)
    if reason is None:
        if intake.pseudonymize is not None:  # an accepted event's user_id is a valid id (str or int)
            event["user_id"] = intake.pseudonymize(str(event["user_id"]))
        try:
            encoded = orjson.dumps(event)  # the event as stored: one line, keys and values as validated
        except (orjson.JSONEncodeError, TypeError):  # an integer beyond 64 bits somewhere in it
            reason = "schema_mismatch"
        else:
            if len(encoded) > max_line_bytes:
                reason = "line_too_long"
            else:
                intake.lines.append(encoded)
                return
    intake.refuse(index, reason, line)
