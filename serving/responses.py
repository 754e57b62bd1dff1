"""JSON answers serialised with orjson straight from plain lists and dicts.

The hot endpoints skip FastAPI's response-model validation: their bodies are built from the
publication's arrays, whose shape the schemas in ``serving.schemas`` document (OpenAPI).
"""

from __future__ import annotations

import orjson
from starlette.responses import Response


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
