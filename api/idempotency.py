"""HTTP glue for `Idempotency-Key` (IETF httpapi draft), on top of `core/idempotency.py`.

Mark an endpoint with `@idempotent()` and register it on a router whose `route_class`
is `IdempotentRoute`. The route then wraps the whole request — body validation,
dependencies, handler — so that:

* a first request claims the key (committed before the work), runs, and its response,
  success or error (problem+json), is stored for `IDEMPOTENCY_TTL_S` (≥ 24 h) — except
  a 503: nothing is stored. When the database was lost mid-request
  (`database_unavailable`), whether the work committed is unknown, so the claim's lease
  (`IDEMPOTENCY_LOCK_TIMEOUT_S`) decides when a retry may run it; when the route itself
  raised a 503 because a dependency did not answer (`payment_gateway_unavailable`, …), its
  work rolled back and the claim is released: a retry runs at once;
* a retry with the same key and the same method, path and body gets the stored response
  again, marked `Idempotent-Replayed: true`;
* a concurrent duplicate gets 409 `idempotency_key_in_use`; the same key with another
  request 422 `idempotency_key_mismatch`; a malformed key 400 `idempotency_key_invalid`;
  where required, a missing key 400 `idempotency_key_missing`.

Keys are scoped to the authenticated user (the bearer token's subject). A request without
a valid bearer token is passed through untouched (it fails authentication anyway).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from api.deps import remember_claims
from api.errors import problem_for_exception
from core import idempotency
from core.db import async_session_factory
from core.errors import AppError, ServiceUnavailable
from core.logging import get_logger
from core.security import decode_access_token
from core.settings import get_settings

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_ATTR = "__idempotency_policy__"
_STORED_HEADERS = ("content-type", "location", "retry-after", "www-authenticate")
log = get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

POLICY_DESCRIPTION = (
    "Makes retries safe (IETF httpapi Idempotency-Key draft). An RFC 8941 string such as "
    '`"5f1c6a7e-0b7e-4d1e-9a57-2b6a3f0d9c11"` (1-255 characters; a bare token is also '
    "accepted), unique per intended operation and user. The first response (success or "
    "error) is kept 24 hours and replayed to retries with the same key, method, path and "
    "body, with `Idempotent-Replayed: true`. While the first request runs, a duplicate gets "
    "409 `idempotency_key_in_use`; the same key with another body 422 "
    "`idempotency_key_mismatch`; a malformed key 400 `idempotency_key_invalid`."
)


# What `core.idempotency.parse_key` accepts, for OpenAPI (so generated clients and API
# fuzzers send valid keys): an RFC 8941 sf-string of 1-255 characters (printable ASCII,
# `\"` and `\\` escaped) or a bare token of 1-255 visible ASCII characters without `"`
# or `\`. The longest sf-string escapes every character: 2 + 2 * 255.
KEY_PATTERN = r'^(?:"(?:[ !#-\[\]-~]|\\["\\]){1,255}"|[!#-\[\]-~]{1,255})$'
KEY_HEADER_MAX_LENGTH = 2 + 2 * idempotency.KEY_MAX_LENGTH


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    """How an endpoint treats `Idempotency-Key`: `required` makes a missing key a 400."""

    required: bool = False


def idempotent(*, required: bool = False) -> Callable[[F], F]:
    """Mark an endpoint as honouring `Idempotency-Key` (its router must use
    `IdempotentRoute`)."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTR, IdempotencyPolicy(required=required))
        return endpoint

    return mark


def _principal(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        claims = decode_access_token(token.strip())
    except AppError:
        return None
    remember_claims(request, token.strip(), claims)  # the auth dependency reuses them
    return f"user:{claims.user_id}"


def _replay(stored: idempotency.StoredResponse) -> Response:
    headers = {**stored.headers, REPLAYED_HEADER: "true"}
    media_type = headers.pop("content-type", None)
    return Response(
        content=stored.body, status_code=stored.status, headers=headers, media_type=media_type
    )


async def _run(
    request: Request, handler: Callable[[Request], Awaitable[Response]]
) -> tuple[Response, Exception | None]:
    """Run the route and turn any exception into the response the client would get (so
    it is stored like any response: a retry must not run the work twice); the exception
    comes back too (None when the route answered)."""
    try:
        return await handler(request), None
    except Exception as exc:
        return problem_for_exception(exc, request), exc


def _dependency_refused(exc: Exception | None) -> bool:
    """A 503 the route raised itself because a dependency (the payment gateway, the
    broker, …) did not answer: its unit of work rolled back, so a retry may run the work
    at once. The database's own 503 (`database_unavailable`: the connection was lost,
    maybe during the COMMIT) is not one of them."""
    return isinstance(exc, ServiceUnavailable) and exc.code != "database_unavailable"


async def handle_idempotently(
    request: Request,
    handler: Callable[[Request], Awaitable[Response]],
    policy: IdempotencyPolicy,
) -> Response:
    """Apply the Idempotency-Key protocol around `handler` (see the module docstring)."""
    principal = _principal(request)
    raw = request.headers.get(HEADER)
    if principal is None:
        return await handler(request)
    if raw is None:
        if policy.required:
            raise idempotency.IdempotencyKeyMissing(f"This operation requires an {HEADER} header.")
        return await handler(request)
    key = idempotency.parse_key(raw)
    body = await request.body()  # cached on the request: the handler reads it again
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    fp = idempotency.fingerprint(request.method, target, body)
    s = get_settings()
    sessions = async_session_factory()
    stored = await idempotency.claim(
        sessions, principal=principal, key=key, fingerprint=fp,
        ttl_s=s.idempotency_ttl_s, lock_s=s.idempotency_lock_timeout_s,
    )  # fmt: skip
    if stored is not None:
        return _replay(stored)
    response, exc = await _run(request, handler)
    if response.status_code == 503:  # transient: a retry must not replay it
        if _dependency_refused(exc):  # nothing was done: the retry need not wait
            try:
                await idempotency.release(sessions, principal=principal, key=key, fingerprint=fp)
            except Exception as error:  # the lease frees it later
                log.warning("idempotency_release_failed", key=key, error=repr(error))
        return response
    keep = {k: v for k, v in response.headers.items() if k.lower() in _STORED_HEADERS}
    try:
        await idempotency.complete(
            sessions, principal=principal, key=key, fingerprint=fp,
            response=idempotency.StoredResponse(response.status_code, bytes(response.body), keep),
        )  # fmt: skip
    except Exception as exc:  # the work is done; the lease lets a retry proceed later
        log.error("idempotency_store_failed", key=key, exc_info=exc)
    return response


class IdempotentRoute(APIRoute):
    """An `APIRoute` that applies `handle_idempotently` to endpoints marked
    `@idempotent()` and documents the `Idempotency-Key` header in OpenAPI."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self.idempotency_policy: IdempotencyPolicy | None = getattr(endpoint, _ATTR, None)
        if self.idempotency_policy is not None:
            extra = dict(kwargs.get("openapi_extra") or {})
            extra["parameters"] = [
                *extra.get("parameters", []),
                {
                    "name": HEADER,
                    "in": "header",
                    "required": self.idempotency_policy.required,
                    "schema": {
                        "type": "string",
                        "maxLength": KEY_HEADER_MAX_LENGTH,
                        "pattern": KEY_PATTERN,
                    },
                    "description": POLICY_DESCRIPTION,
                },
            ]
            kwargs["openapi_extra"] = extra
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        policy = getattr(self, "idempotency_policy", None)
        if policy is None:
            return handler

        async def idempotent_handler(request: Request) -> Response:
            return await handle_idempotently(request, handler, policy)

        return idempotent_handler
