"""JSON answers serialised with orjson straight from plain lists and dicts.

The hot endpoints skip FastAPI's response-model validation: their bodies are built from the
publication's arrays, whose shape the schemas in ``serving.schemas`` document (OpenAPI).
"""

from __future__ import annotations

import orjson
from starlette.responses import JSONResponse


class JSONBytes(JSONResponse):
    """A JSON response from a body already serialised (bytes) or from plain data.

    A JSONResponse subclass so that FastAPI documents the bodies with their JSON schema (with a
    plain Response it declares them ``"type": "string"``); its own ``__init__`` replaces all of
    JSONResponse's work.

    Numpy float32 scores are written in their shortest form (0.3, not 0.30000001).
    """

    media_type = "application/json"

    def __init__(self, content, status_code: int = 200, request_id: bytes | None = None) -> None:
        # Starlette's generic header building is a visible share of a 50-microsecond answer.
        self.status_code = status_code
        self.background = None
        self.body = content if isinstance(content, bytes) else orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
        self.raw_headers = [
            (b"content-length", str(len(self.body)).encode("latin-1")),
            (b"content-type", b"application/json"),
        ]
        if request_id is not None:  # the answer's id, as in its body (serving/impressions/request_ids.py)
            self.raw_headers.append((b"x-request-id", request_id))

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
