"""Push through Firebase Cloud Messaging with `firebase-admin` (`messaging.send`).

With FCM_CREDENTIALS_FILE the SDK uses that service account against Google. Without it,
the local stand-in (`standins.fcm`) plays both Google endpoints the SDK calls: the OAuth
token endpoint (a throw-away service account is generated whose `token_uri` is the
stand-in's, so google-auth signs a real JWT assertion and exchanges it) and the FCM v1
`messages:send` endpoint. firebase-admin has no public override of the FCM host (there
is no messaging emulator variable); its `_MessagingService` keeps the URL in
`_fcm_url`, built from the class constant `FCM_URL` — the adapter sets it on the app's
service instance (`firebase_admin/messaging.py`, 7.x), nothing else of the SDK changes.

Errors: `UnregisteredError`, `InvalidArgumentError`, `SenderIdMismatchError`,
`ThirdPartyAuthError` are permanent; every other `FirebaseError` (quota, unavailable,
internal) and network failures transient.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from core.settings import get_settings
from notifications.channels import Message, PermanentChannelError, TransientChannelError

_lock = threading.Lock()
_apps: dict[tuple[str, str], Any] = {}


def standin_service_account(standin_url: str, project: str) -> dict[str, str]:
    """A service-account JSON (fresh RSA key) whose token URI is the stand-in's."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": f"standin@{project}.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": f"{standin_url.rstrip('/')}/token",
    }


def _app(credentials_file: str | None, standin_url: str, project: str) -> Any:
    import firebase_admin
    from firebase_admin import credentials, messaging

    key = (credentials_file or "", standin_url if not credentials_file else "")
    with _lock:
        app = _apps.get(key)
        if app is not None:
            return app
        name = f"educonnect-{uuid.uuid4().hex[:8]}"
        if credentials_file:
            app = firebase_admin.initialize_app(
                credentials.Certificate(credentials_file), name=name
            )
        else:
            cert = credentials.Certificate(standin_service_account(standin_url, project))
            app = firebase_admin.initialize_app(cert, {"projectId": project}, name=name)
            service = messaging._get_messaging_service(app)
            service._fcm_url = f"{standin_url.rstrip('/')}/v1/projects/{project}/messages:send"
        _apps[key] = app
        return app


class PushChannel:
    """FCM adapter (one firebase app per process and configuration)."""

    name = "push"

    def __init__(self, app: Any) -> None:
        self.app = app

    @classmethod
    def from_settings(cls) -> PushChannel:
        """From FCM_CREDENTIALS_FILE, or on the stand-in at FCM_STANDIN_URL."""
        s = get_settings()
        return cls(_app(s.fcm_credentials_file, s.fcm_standin_url, s.fcm_standin_project))

    def send(self, message: Message) -> str:
        """Send a notification message to the device token; returns FCM's message name."""
        import requests
        from firebase_admin import exceptions, messaging

        msg = messaging.Message(
            token=message.to,
            notification=messaging.Notification(title=message.subject, body=message.short),
            data={"notification_id": message.reference},
        )
        try:
            return str(messaging.send(msg, app=self.app))
        except (
            messaging.UnregisteredError,
            messaging.SenderIdMismatchError,
            messaging.ThirdPartyAuthError,
            exceptions.InvalidArgumentError,
            exceptions.NotFoundError,
            exceptions.PermissionDeniedError,
            exceptions.UnauthenticatedError,
        ) as exc:
            raise PermanentChannelError(f"FCM {type(exc).__name__}: {exc}") from exc
        except (exceptions.FirebaseError, requests.RequestException, OSError) as exc:
            raise TransientChannelError(f"FCM unavailable: {exc!r}") from exc
