"""The application error family, rendered as RFC 9457 `application/problem+json`.

Every error a client can see has a stable machine-readable `code`; the HTTP layer
(`api/errors.py`) turns an `AppError` into a problem document. Domain packages raise
subclasses of `AppError` and never import FastAPI.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://errors.educonnect.dev/"


class AppError(Exception):
    """An error with an HTTP status, a stable `code` and a human-readable `detail`.

    `extra` holds additional problem members (e.g. `errors` for validation failures,
    `param` naming the faulty query parameter); they are merged into the document.
    """

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if title is not None:
            self.title = title
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """Return the RFC 9457 problem document: type, title, status, detail, code, extras."""
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class ValidationFailed(AppError):
    """422: the request is well-formed but a field or parameter is invalid."""

    status = 422
    code = "validation_error"
    title = "Validation failed"


class NotFound(AppError):
    """404: the resource does not exist (or is not visible to the caller)."""

    status = 404
    code = "not_found"
    title = "Not found"


class Conflict(AppError):
    """409: the request conflicts with the current state of the resource."""

    status = 409
    code = "conflict"
    title = "Conflict"


class Unauthorized(AppError):
    """401: missing or invalid credentials."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class Forbidden(AppError):
    """403: authenticated but not allowed."""

    status = 403
    code = "forbidden"
    title = "Forbidden"


class ServiceUnavailable(AppError):
    """503: a dependency (database, cache, search engine) cannot serve the request."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"
