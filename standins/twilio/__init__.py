"""A local HTTP stand-in of Twilio's Messages API, for tests and `make run`.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form `To`, `From`, `Body`, HTTP
basic auth with the account sid as user) answers 201 with a Message resource shaped like
Twilio's (`sid` `SM…`, `status: queued`, …). Like Twilio's test credentials, `To`
`+15005550001` is an invalid number (400, code 21211). Planned failures
(`/_standin/fail`) answer Twilio's error JSON (`code`, `message`, `status`). Run it with
`python -m standins.twilio [--port 12112]`; control endpoints in `standins.recorder`.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from standins.recorder import Handler, StandinServer

PREFIX = "/2010-04-01/Accounts/"


def _messages(h: Handler, path: str, raw: bytes) -> tuple[int, dict[str, Any]]:
    sid = path[len(PREFIX) :].split("/", 1)[0]
    auth = h.headers.get("Authorization", "")
    user = base64.b64decode(auth[6:]).decode().split(":", 1)[0] if auth.startswith("Basic ") else ""
    if user != sid:
        return 401, {"code": 20003, "message": "Authenticate", "status": 401}
    form = h.form(raw)
    failure = h.server.recorder.next_failure()
    if failure is not None:
        return failure, {
            "code": 20500 if failure >= 500 else 20429,
            "message": "stand-in failure",
            "status": failure,
        }
    if form.get("To") == "+15005550001":
        return 400, {
            "code": 21211, "message": f"The 'To' number {form['To']} is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400,
        }  # fmt: skip
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    msg = {
        "sid": "SM" + uuid.uuid4().hex, "account_sid": sid, "to": form.get("To"),
        "from": form.get("From"), "body": form.get("Body"), "status": "queued",
        "num_segments": "1", "direction": "outbound-api", "api_version": "2010-04-01",
        "date_created": now, "date_updated": now, "date_sent": None, "price": None,
        "price_unit": "USD", "error_code": None, "error_message": None,
        "uri": f"{PREFIX}{sid}/Messages/x.json",
    }  # fmt: skip
    h.server.recorder.add(msg)
    return 201, msg


def server(host: str = "127.0.0.1", port: int = 0) -> StandinServer:
    """A Twilio stand-in bound to (host, port) (0: a free port), not yet serving."""
    return StandinServer((host, port), {("POST", PREFIX): _messages})
