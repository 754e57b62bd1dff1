"""Access to the live publication and the parsing and checks the hot endpoints share.

The hot endpoints take the raw request and parse their three parameters here instead of
through FastAPI's ``Depends``/``Query`` machinery: on an answer that costs tens of microseconds,
generic parameter resolution cost more than the lookup itself (profiled with py-spy; see
benchmarks/README.md). Their parameters are still documented in OpenAPI (``PARAMETERS``), and
bad values get the same kind of clear 422 body.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

import numpy as np
from fastapi import Request

from serving.errors import ApiError
from serving.failures import Reason
from serving.format import MAX_TOP_N
from serving.ids import ID_PATTERN, MAX_ID_LENGTH
from serving.impressions.request_ids import REQUEST_ID_PATTERN
from serving.publication import Publication
from serving.schemas import ErrorDetail
from serving.store import PublicationStore

# Ids follow the one id contract (serving/ids.py): nothing in a request can name a path.
MAX_EXCLUDED = 200
_ID = re.compile(ID_PATTERN)
EXCLUDE_DESCRIPTION = (
    f"Item ids the app already shows, repeated or comma-separated (at most {MAX_EXCLUDED}): they are "
    "left out and the list is filled from further down, so it still has `k` items when enough are stored."
)


def get_store(request: Request) -> PublicationStore:
    return request.app.state.store


def live_publication(store: PublicationStore) -> Publication:
    publication = store.current
    if publication is None:
        raise ApiError(503, Reason.NO_PUBLICATION, "no publication loaded yet")
    return publication


_INVALID_ID = {"user_id": Reason.INVALID_USER_ID, "item_id": Reason.INVALID_ITEM_ID}


def checked_id(name: str, value: str) -> str:
    if not _ID.fullmatch(value):  # fullmatch: "$" alone would let "u1\n" through
        raise ApiError(422, _INVALID_ID[name], f"{name} {value[:140]!r} does not match the pattern {ID_PATTERN}")
    return value


def query_values(request: Request) -> dict[str, list[str]]:
    """The query string as name -> values, decoding only what is escaped.

    Starlette's QueryParams (parse_qsl + a multidict) was a third of the answer's cost for the
    usual ``?k=10``; this gives the same result for every well-formed query string.
    """
    cached = request.scope.get("recforge.query")
    if cached is not None:
        return cached
    values: dict[str, list[str]] = {}
    raw = request.scope.get("query_string", b"")
    for part in raw.decode("latin-1").split("&") if raw else ():
        name, _, value = part.partition("=")
        if not name:
            continue
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        values.setdefault(name, []).append(value)
    request.scope["recforge.query"] = values
    return values


def checked_k(request: Request, publication: Publication, default: int = 10) -> int:
    """The `k` of the query (default 10), an integer within 1..top_n of the publication, else a 422."""
    given = query_values(request).get("k")
    if not given:
        k = default
    else:
        text = given[-1]
        try:
            k = int(text)
        except ValueError:
            raise ApiError(
                422, Reason.INVALID_K, f"k must be an integer, got {text[:40]!r}", publication.version
            ) from None
    if not 1 <= k <= publication.top_n:
        raise ApiError(
            422,
            Reason.INVALID_K,
            f"k must be between 1 and {publication.top_n} for publication {publication.version}",
            publication.version,
        )
    return k


def excluded_ids(request: Request) -> list[str]:
    ids = [part for value in query_values(request).get("exclude", ()) for part in value.split(",") if part]
    if len(ids) > MAX_EXCLUDED:
        raise ApiError(422, Reason.INVALID_PARAMETER, f"exclude names {len(ids)} items; at most {MAX_EXCLUDED}")
    return ids


def filters(
    publication: Publication, store: PublicationStore, excluded: list[str]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(blocked mask, excluded rows), each None when empty: the blocklist since publication, the app's exclusions."""
    return publication.blocked_mask(store.blocked), publication.excluded_rows(excluded)


K_DESCRIPTION = (
    "How many items to return (default 10): from 1 to the live publication's `top_n` (the items stored "
    f"per user, shown by `/readyz`), which is never above {MAX_TOP_N}."
)
ERRORS = {
    404: "The item is not in the live publication.",
    422: "A parameter is invalid: an id outside the pattern, `k` out of range, too many `exclude` ids.",
    503: "No publication is loaded yet (see `/readyz`).",
}


def answer_responses(*error_statuses: int) -> dict:
    """OpenAPI ``responses`` of a hot endpoint: the answer's ``X-Request-ID`` header, then its errors
    (each with the ``detail`` body)."""
    request_id = {
        "description": "The answer's `request_id` (as in the body).",
        "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
    }
    answer = {200: {"description": "Successful Response", "headers": {"X-Request-ID": request_id}}}
    return answer | {status: {"model": ErrorDetail, "description": ERRORS[status]} for status in error_statuses}


def openapi_parameters(path_name: str, path_description: str) -> dict:
    """OpenAPI description of the parameters the hot endpoints parse themselves."""
    return {
        "parameters": [
            {
                "name": path_name,
                "in": "path",
                "required": True,
                "description": path_description,
                "schema": {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": MAX_ID_LENGTH},
            },
            {
                "name": "k",
                "in": "query",
                "required": False,
                "description": K_DESCRIPTION,
                "schema": {"type": "integer", "default": 10, "minimum": 1, "maximum": MAX_TOP_N},
            },
            {
                "name": "exclude",
                "in": "query",
                "required": False,
                "description": EXCLUDE_DESCRIPTION,
                "schema": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_EXCLUDED},
                "style": "form",
                "explode": True,
            },
            {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": "The app's own id for this request, kept as the answer's `request_id` when it "
                "matches the pattern; otherwise the server makes one.",
                "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
            },
        ]
    }
