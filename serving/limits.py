"""Request size limits enforced where the bytes arrive: in uvicorn's HTTP protocol, before the app.

Uvicorn's httptools protocol accepts a request head of any size: one client sending a 50 MB header
kept the event loop busy parsing it and raised every other request's median latency from 0.4 ms
to 1.4 s. By the time an ASGI middleware sees a request its head has already been read and parsed,
so the limits live in the protocol: a head (request line and headers) longer than
``max_header_bytes`` or with more than ``max_header_count`` headers is answered 431, a body longer
than ``max_body_bytes`` 413, and nothing more of that connection is parsed. The connection is
half-closed after the answer and the rest of what the client sends is discarded unparsed for up
to ``LINGER_SECONDS`` before closing: closing at once, with the client still sending, makes its
kernel reset the connection and throw the answer away (nginx's "lingering close").
"""

from __future__ import annotations

from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving.config import ServingSettings
from serving.failures import UNMATCHED, FailureLog, Reason

LINGER_SECONDS = 2.0


class RequestTooLarge(Exception):
    """A request over one of the limits: its status (431 or 413), its failure-log reason and the text sent."""

    def __init__(self, status: int, reason: Reason, text: str):
        super().__init__(text)
        self.status = status
        self.reason = reason


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Uvicorn's httptools protocol with limits on the request head and body (set by ``protocol_for``)."""

    max_header_bytes = 16 * 1024
    max_header_count = 100
    max_body_bytes = 1024 * 1024
    failures: FailureLog | None = None  # refusals are recorded there (never reach the app)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._in_body = False
        self._head_bytes = 0  # bytes received since the current request's head began
        self._header_count = 0
        self._body_bytes = 0
        self._refused = False
        self._request_cycle = None  # the current request's cycle, once its head is complete

    def data_received(self, data: bytes) -> None:
        # A copy of uvicorn's data_received that also counts the head: a header still being
        # received is buffered inside the parser, so only the bytes on the wire show its size.
        if self._refused:
            return  # the rest of a refused request: read and dropped, never parsed
        self._unset_keepalive_if_required()
        if not self._in_body:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as error:
            # An exception raised in a parser callback arrives wrapped, with the original as context.
            if isinstance(error.__context__, RequestTooLarge):
                self._refuse(error.__context__)
            else:
                msg = "Invalid HTTP request received."
                self.logger.warning(msg)
                self._record_refusal(400, Reason.MALFORMED_REQUEST, msg)
                self.send_400_response(msg)
            return
        if not self._in_body and self._head_bytes > self.max_header_bytes:
            self._refuse(
                RequestTooLarge(
                    431, Reason.HEADER_TOO_LARGE, f"request head is longer than {self.max_header_bytes} bytes"
                )
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_cycle = None  # self.cycle is still the previous request's on a kept-alive connection
        self._header_count = 0
        self._body_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_header_count:
            raise RequestTooLarge(
                431, Reason.TOO_MANY_HEADERS, f"request has more than {self.max_header_count} headers"
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise RequestTooLarge(
                    413, Reason.BODY_TOO_LARGE, f"request body is longer than {self.max_body_bytes} bytes"
                )
        self._in_body = True
        self._head_bytes = 0
        super().on_headers_complete()
        self._request_cycle = self.cycle

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.max_body_bytes:  # a chunked body names no length up front
            raise RequestTooLarge(
                413, Reason.BODY_TOO_LARGE, f"request body is longer than {self.max_body_bytes} bytes"
            )
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def _refuse(self, refusal: RequestTooLarge) -> None:
        """Answer the refusal and stop parsing; the app's own answer, if one is under way, is dropped."""
        self.logger.warning("refused a request: %s", refusal)
        self._record_refusal(refusal.status, refusal.reason, str(refusal))
        self._refused = True
        cycle = self._request_cycle
        if cycle is not None:
            cycle.disconnected = True
        if cycle is None or not cycle.response_started:  # else too late for a status
            reason = str(refusal).encode("ascii")
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[refusal.status],
                        b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: " + str(len(reason)).encode("ascii") + b"\r\n",
                        b"connection: close\r\n\r\n",
                        reason,
                    ]
                )
            )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _record_refusal(self, status: int, reason: Reason, text: str) -> None:
        """The failure log's record of a request refused before routing (its path, when the head got that far)."""
        if self.failures is not None:
            raw = getattr(self, "url", b"").partition(b"?")[0]  # the request line's target, once parsed
            path = unquote(raw.decode("latin-1")) if raw else None
            self.failures.record(UNMATCHED, status, reason, None, path=path, detail=text)


def protocol_for(settings: ServingSettings, failures: FailureLog | None = None) -> type[LimitedHttpToolsProtocol]:
    """The HTTP protocol class for uvicorn with the settings' limits, recording refusals in `failures`."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {
            "max_header_bytes": settings.max_header_bytes,
            "max_header_count": settings.max_header_count,
            "max_body_bytes": settings.max_body_bytes,
            "failures": failures,
        },
    )


def uvicorn_options(settings: ServingSettings, failures: FailureLog | None = None) -> dict:
    """Everything ``uvicorn.run``/``uvicorn.Config`` needs beyond the app, limits and the failure log included."""
    return {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_for(settings, failures),
        "access_log": settings.access_log,
    }
