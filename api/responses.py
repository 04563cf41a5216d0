"""JSON response classes rendered with orjson (for bodies built as plain dicts)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from core.errors import PROBLEM_CONTENT_TYPE


class OrjsonResponse(JSONResponse):
    """`application/json` rendered by orjson (UUIDs, datetimes as RFC 3339, numpy-free)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ProblemResponse(OrjsonResponse):
    """An RFC 9457 problem document (`application/problem+json`)."""

    media_type = PROBLEM_CONTENT_TYPE
