"""Error answers of the API and their entry in the failure log (serving/failures.py).

An endpoint that refuses a request raises ``ApiError`` with the reason it knows; the handlers
installed by ``install_error_handlers`` answer with FastAPI's usual ``{"detail": ...}`` body and
record every 4xx/5xx answer of the API (paths under ``/v1/``) with its reason, the route, the
publication version and the ids in the path. Errors of other paths (``/healthz``, the docs) are
not recorded. Nothing here runs on a successful answer.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from serving.failures import UNMATCHED, Reason
from serving.metrics import API_PREFIX


class ApiError(HTTPException):
    """An error answer that knows its reason (and, when it has one, the publication it consulted)."""

    def __init__(
        self, status_code: int, reason: Reason, detail: str, version: str | None = None, headers: dict | None = None
    ):
        super().__init__(status_code=status_code, detail=detail, headers=headers)
        self.reason = reason
        self.version = version


def reason_for(request: Request, exc: StarletteHTTPException) -> Reason:
    """The reason of an error raised by Starlette or FastAPI themselves (no ApiError)."""
    if isinstance(exc, ApiError):
        return exc.reason
    if exc.status_code == 404 and "route" not in request.scope:
        return Reason.UNKNOWN_ENDPOINT
    if exc.status_code == 405:
        return Reason.METHOD_NOT_ALLOWED
    return Reason.OTHER


def record_failure(request: Request, status: int, reason: Reason, detail: str | None, version: str | None = None):
    """Queue the failure log's record of this answer (never waits)."""
    scope = request.scope
    route = scope.get("route")
    params = scope.get("path_params") or {}
    user_id = params.get("user_id")
    store = getattr(scope["app"].state, "store", None)
    if user_id is not None and store is not None and store.denies(user_id):
        user_id = None  # never the id of a user forgotten since the publication
    scope["app"].state.failures.record(
        route.path if route is not None else UNMATCHED,
        status,
        reason,
        version,
        user_id=user_id,
        item_id=params.get("item_id"),
        path=None if route is not None else scope.get("path"),
        detail=detail,
    )


async def _http_error(request: Request, exc: StarletteHTTPException):
    if request.scope.get("path", "").startswith(API_PREFIX):
        record_failure(
            request, exc.status_code, reason_for(request, exc), str(exc.detail), getattr(exc, "version", None)
        )
    return await http_exception_handler(request, exc)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's last resort (it re-raises afterwards, so the server still logs the traceback)."""
    if request.scope.get("path", "").startswith(API_PREFIX):
        record_failure(request, 500, Reason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)  # FastAPI's HTTPException is one
    app.add_exception_handler(Exception, _internal_error)
