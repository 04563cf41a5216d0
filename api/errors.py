"""Render every error as RFC 9457 `application/problem+json` with a stable `code`.

Handlers cover our `AppError` family, FastAPI/pydantic request validation (422, with the
offending parameter named in `errors[].param`), a body that cannot be decoded as JSON
or form data (422 `malformed_json` / `malformed_form`, the same envelope), Starlette HTTP errors (404, 405, …), a lost or unreachable database (503
`database_unavailable` with `Retry-After`) and, as a last resort, unexpected exceptions (500 `internal_error`, logged with the request id).
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from api.responses import ProblemResponse
from core.errors import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, AppError, ServiceUnavailable
from core.logging import get_logger

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def problem_response(error: AppError, request: Request) -> ProblemResponse:
    """The HTTP response for `error`, with its headers (e.g. `Retry-After`)."""
    return ProblemResponse(
        error.to_problem(instance=request.url.path), status_code=error.status, headers=error.headers
    )


# How long a client should wait before retrying when the database cannot be reached: the
# pool replaces its connections on the next checkout, so a retry soon after succeeds once
# PostgreSQL accepts connections again.
DATABASE_RETRY_AFTER_S = 1

# SQLSTATEs of a connection that is gone or refused: class 08 (connection exception) and
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now). Other
# `OperationalError`s (lock or statement timeouts, …) are not outages.
_LOST_CONNECTION_STATES = ("57P01", "57P02", "57P03")


def _lost_connection(error: BaseException | None) -> bool:
    """Whether a psycopg error means the server connection is gone or cannot be made."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in _LOST_CONNECTION_STATES


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot serve now, not that the request is wrong.

    True for a statement whose connection died (SQLAlchemy's `DBAPIError` with
    `connection_invalidated`, e.g. after a PostgreSQL restart), a connection that cannot be
    opened or was shut down (psycopg `OperationalError` of SQLSTATE class 08 or 57P01-03,
    bare or wrapped by SQLAlchemy) and the pool's checkout timeout (`sqlalchemy.exc.TimeoutError`).
    """
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        return bool(exc.connection_invalidated) or _lost_connection(exc.orig)
    return _lost_connection(exc)


def database_unavailable_problem() -> AppError:
    """The 503 `database_unavailable` a client gets while the database is out of reach."""
    return ServiceUnavailable(
        "The database is temporarily unavailable; retry shortly.",
        code="database_unavailable",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


def _param_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """'query.lat' → 'lat'; 'body.location.lat' → 'location.lat'."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header", "cookie", "body"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_problem(errors: list[dict[str, Any]]) -> AppError:
    """A 422 `validation_error` listing each failure as {param, in, message, type}."""
    items = [
        {
            "param": _param_name(e.get("loc", ())),
            "in": str(e["loc"][0]) if e.get("loc") else "body",
            "message": str(e.get("msg", "invalid")),
            "type": str(e.get("type", "value_error")),
        }
        for e in errors
    ]
    params = ", ".join(dict.fromkeys(i["param"] for i in items))
    return AppError(
        f"Invalid request parameter(s): {params}",
        code="validation_error",
        status=422,
        title="Validation failed",
        errors=items,
    )


# FastAPI answers a JSON body it cannot decode in two ways: invalid JSON text is a
# `RequestValidationError` of type `json_invalid`, while bytes that are not text at all
# (invalid UTF-8…) end in a bare Starlette `HTTPException(400)` with this detail, raised
# from the decoding error (`fastapi.routing.get_request_handler`). Starlette turns a form
# body it cannot parse (a multipart body without its boundary…) into an
# `HTTPException(400)` raised while handling a `MultiPartException`.
_BODY_PARSE_DETAIL = "There was an error parsing the body"


def malformed_body_problem(message: str, *, form: bool = False) -> AppError:
    """A 422 `malformed_json` (or `malformed_form`): the body cannot be decoded as the
    media type it declares. 422 because every route with a body documents 422, and the
    envelope is `validation_error`'s: one `errors` item for the body."""
    kind = "form" if form else "json"
    return AppError(
        f"The request body is not valid {'form data' if form else 'JSON'}.",
        code=f"malformed_{kind}",
        status=422,
        title="Malformed request body",
        errors=[{"param": "body", "in": "body", "message": message, "type": f"{kind}_invalid"}],
    )


def _malformed_body(exc: StarletteHTTPException) -> AppError | None:
    """The 422 for a 400 that Starlette or FastAPI raised on an undecodable body, else None."""
    if exc.status_code != 400:
        return None
    if isinstance(exc.__context__, MultiPartException):
        return malformed_body_problem(str(exc.detail), form=True)
    if exc.detail == _BODY_PARSE_DETAIL and exc.__cause__ is not None:
        not_text = isinstance(exc.__cause__, UnicodeError)
        return malformed_body_problem("not UTF-8 text" if not_text else "not JSON")
    return None


def problem_for_exception(exc: Exception, request: Request) -> ProblemResponse:
    """The problem+json response a client gets for `exc`, whatever its kind.

    `AppError` → its own status and code; a body that is not JSON (form data) → 422
    `malformed_json` (`malformed_form`); other request validation → 422
    `validation_error`; Starlette HTTP errors → their status with a stable code (404
    `not_found`, …); a lost or unreachable database (`database_unavailable`) → 503
    `database_unavailable` with `Retry-After`, logged as a warning; anything else → 500
    `internal_error`, logged with the request id, internals not disclosed.
    """
    if isinstance(exc, AppError):
        return problem_response(exc, request)
    if isinstance(exc, RequestValidationError):
        errors = list(exc.errors())
        invalid = [e for e in errors if e.get("type") == "json_invalid"]
        if invalid:
            ctx = invalid[0].get("ctx") or {}
            return problem_response(
                malformed_body_problem(str(ctx.get("error") or "JSON decode error")), request
            )
        return problem_response(validation_problem(errors), request)
    if isinstance(exc, StarletteHTTPException):
        malformed = _malformed_body(exc)
        if malformed is not None:
            return problem_response(malformed, request)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        err = AppError(
            detail,
            code=code,
            status=exc.status_code,
            title=code.replace("_", " ").capitalize(),
            headers=dict(exc.headers or {}),
        )
        return problem_response(err, request)
    if database_unavailable(exc):
        log.warning("database_unavailable", path=request.url.path, error=repr(exc))
        return problem_response(database_unavailable_problem(), request)
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    err = AppError(
        "An unexpected error occurred; it has been logged.",
        code="internal_error",
        status=500,
        title="Internal server error",
    )
    return problem_response(err, request)


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on `app` (all through `problem_for_exception`)."""

    async def _handle(request: Request, exc: Exception) -> ProblemResponse:
        return problem_for_exception(exc, request)

    kinds = (
        AppError,
        RequestValidationError,
        StarletteHTTPException,
        # handled here rather than by the server-error layer, which re-raises after answering
        sa_exc.DBAPIError,
        sa_exc.TimeoutError,
        psycopg.OperationalError,
        Exception,
    )
    for kind in kinds:
        app.add_exception_handler(kind, _handle)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "example": PROBLEM_TYPE_BASE + "validation_error"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "Stable machine-readable error code"},
        "instance": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status", "code"],
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries declaring problem+json bodies for `statuses`."""
    return {
        s: {
            "description": _HTTP_CODES.get(
                s, "validation_error, malformed_json or malformed_form" if s == 422 else "error"
            ),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for s in statuses
    }
