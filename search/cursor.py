"""Opaque keyset cursors.

A cursor is `base64url(json)` + `.` + a truncated HMAC-SHA256 (key: `SECRET_KEY`) of that
JSON. The JSON holds a version, the sort, a fingerprint of the normalized query (every
filter and the sort, not `limit` nor `cursor`) and the sort key of the last item returned
(`[key..., id]`). A cursor that does not parse, whose signature does not match, or that was
made for another query is rejected with a 422 naming `cursor`; a client can change `limit`
between pages, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from core.settings import get_settings
from search.errors import InvalidParameter

_VERSION = 1


def fingerprint(normalized_query: dict[str, Any]) -> str:
    """A short stable hash of a normalized query (limit and cursor excluded by the caller)."""
    raw = orjson.dumps(normalized_query, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:16]


def _sign(payload: bytes) -> str:
    key = get_settings().secret_key.encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def encode(sort: str, query_fp: str, key: list[Any]) -> str:
    """The cursor after an item whose sort key is `key` (JSON-able values, id last)."""
    payload = orjson.dumps({"v": _VERSION, "s": sort, "q": query_fp, "k": key})
    body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    return f"{body}.{_sign(payload)}"


def decode(cursor: str, sort: str, query_fp: str) -> list[Any]:
    """The sort key stored in `cursor`; 422 (`cursor`) when malformed, tampered with or
    made for another query or sort."""
    try:
        body, sig = cursor.split(".", 1)
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise InvalidParameter("cursor", "malformed cursor") from None
    if not hmac.compare_digest(sig, _sign(payload)):
        raise InvalidParameter("cursor", "malformed cursor")
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise InvalidParameter("cursor", "malformed cursor") from None
    if (
        not isinstance(data, dict)
        or data.get("v") != _VERSION
        or not isinstance(data.get("k"), list)
    ):
        raise InvalidParameter("cursor", "malformed cursor")
    if data.get("s") != sort or data.get("q") != query_fp:
        raise InvalidParameter("cursor", "this cursor belongs to another query")
    return list(data["k"])
