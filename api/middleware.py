"""ASGI middleware: request id, structured access log and Prometheus HTTP metrics.

Written as plain ASGI (not `BaseHTTPMiddleware`) to keep the per-request overhead low on
the search hot path. The request id comes from the `X-Request-ID` header when the client
sends a sane one, else a new UUID4; it is echoed in the response and bound to every log
line emitted while the request runs. An exception no handler took is rendered here, as
the 500 problem+json of `api.errors` (unless the response had already started): inside
the request's context, so the response carries the request id and so does the error's
log line.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import problem_for_exception
from core.logging import get_logger
from core.metrics import HTTP_LATENCY, HTTP_REQUESTS

REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
_QUIET_ROUTES = frozenset({"/healthz", "/metrics"})
log = get_logger("educonnect.access")


def route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/admin/reindex/{task_id}`), or
    `unmatched`. FastAPI ≥ 0.16x includes routers lazily and `scope["route"]` carries the
    router-relative template; the router prefix (parameter-free here) is taken back from
    the request path's leading segments."""
    template: str | None = getattr(scope.get("route"), "path", None)
    if not template:
        return "unmatched"
    path: str = scope["path"]
    extra = path.count("/") - template.count("/")
    if extra > 0 and not path.startswith(template):
        return "/".join(path.split("/")[: extra + 1]) + template
    return template


def _uuid4_hex() -> str:
    """A random UUID (version 4, RFC 9562) as 32 hex digits, as `uuid.uuid4().hex` but
    without building a `UUID` object."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


class RequestContextMiddleware:
    """Binds `request_id`, logs one `request` line per request, records HTTP metrics.

    The metrics' labelled children are kept per (method, route, status) — a handful of
    routes, so a small dict — rather than looked up under the metric's lock on every
    request; the access log line is built only when INFO is enabled."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def _record(self, method: str, template: str, status: int, elapsed: float) -> None:
        counter = self._counters.get((method, template, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(method, template, str(status))
            self._counters[(method, template, status)] = counter
        counter.inc()
        histogram = self._histograms.get((method, template))
        if histogram is None:
            histogram = HTTP_LATENCY.labels(method, template)
            self._histograms[(method, template)] = histogram
        histogram.observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = b""
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                incoming = value
        request_id = incoming.decode() if _SANE_ID.match(incoming) else _uuid4_hex()
        scope.setdefault("state", {})["request_id"] = request_id
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = False
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"].append((REQUEST_ID_HEADER, request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if started:  # too late for a problem response: the server drops the connection
                raise
            await problem_for_exception(exc, Request(scope))(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - start
            template = route_template(scope)
            method = scope["method"]
            self._record(method, template, status, elapsed)
            if template not in _QUIET_ROUTES and log.is_enabled_for(logging.INFO):
                log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    query=scope.get("query_string", b"").decode("latin-1")[:512] or None,
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.reset_contextvars(**tokens)
