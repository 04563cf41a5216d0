"""A local HTTP stand-in of the two Google endpoints firebase-admin calls to send a push.

- `POST /token`: the OAuth 2.0 JWT-bearer grant (`grant_type=urn:ietf:params:oauth:
  grant-type:jwt-bearer`, `assertion=<RS256 JWT>`); the assertion's claims are checked
  (issuer, audience = this URL, the FCM scope) — its signature is not (the stand-in does
  not know the throw-away key) — and a bearer token is issued for 1 h.
- `POST /v1/projects/{project}/messages:send` (FCM HTTP v1, `Authorization: Bearer`):
  records `message`, answers `{"name": "projects/{project}/messages/{id}"}`. A token
  starting with `unregistered` gets FCM's 404 `UNREGISTERED` error; planned failures
  (`/_standin/fail`) answer FCM's error JSON with the status asked (503 → `UNAVAILABLE`).
Run it with `python -m standins.fcm [--port 12113]`.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

from standins.recorder import Handler, StandinServer

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_STATUS = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


def _claims(jwt: str) -> dict[str, Any]:
    part = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _error(status: int, fcm_code: str | None = None) -> tuple[int, dict[str, Any]]:
    err: dict[str, Any] = {
        "code": status,
        "message": "stand-in",
        "status": _STATUS.get(status, "UNKNOWN"),
    }
    if fcm_code:
        err["details"] = [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}
        ]
    return status, {"error": err}


def _token(h: Handler, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    form = h.form(raw)
    try:
        claims = _claims(form["assertion"])
    except (KeyError, ValueError, IndexError):
        return 400, {"error": "invalid_grant", "error_description": "bad assertion"}
    if SCOPE not in str(claims.get("scope", "")) and "cloud-platform" not in str(
        claims.get("scope", "")
    ):
        return 400, {"error": "invalid_scope"}
    token = "ya29.standin-" + secrets.token_urlsafe(16)
    h.server.tokens.add(token)  # type: ignore[attr-defined]
    return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}


def _send(h: Handler, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    auth = h.headers.get("Authorization", "")
    if auth[7:] not in h.server.tokens:  # type: ignore[attr-defined]
        return _error(401)
    project = path.split("/")[3]
    message = json.loads(raw or b"{}").get("message", {})
    failure = h.server.recorder.next_failure()
    if failure is not None:
        return _error(failure)
    if str(message.get("token", "")).startswith("unregistered"):
        return _error(404, "UNREGISTERED")
    name = f"projects/{project}/messages/{uuid.uuid4().hex}"
    h.server.recorder.add({"name": name, "message": message})
    return 200, {"name": name}


def server(host: str = "127.0.0.1", port: int = 0) -> StandinServer:
    """An FCM stand-in bound to (host, port) (0: a free port), not yet serving."""
    srv = StandinServer(
        (host, port), {("POST", "/token"): _token, ("POST", "/v1/projects/"): _send}
    )
    srv.tokens = set()  # type: ignore[attr-defined]
    return srv
