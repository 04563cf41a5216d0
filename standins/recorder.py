"""Shared kit of the small HTTP stand-ins (Twilio, FCM): a threaded `http.server`, a
record of what was received, and a failure plan set over HTTP.

Control endpoints common to every stand-in (no auth):
- `GET /_standin/received` → `{"items": [...]}` what was accepted, oldest first;
- `POST /_standin/fail` `{"status": 503, "times": 2}` → the next `times` sends answer
  `status` (the vendor's error shape), then sends succeed again;
- `POST /_standin/reset` → forget everything; `GET /_standin/health` → `{"ok": true}`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

Route = Callable[["Handler", str, bytes], tuple[int, dict[str, Any]]]


class Recorder:
    """What a stand-in received and the failures it still has to answer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []
        self.failures: list[int] = []

    def next_failure(self) -> int | None:
        """The status of the next planned failure (consumed), or None."""
        with self.lock:
            return self.failures.pop(0) if self.failures else None

    def add(self, item: dict[str, Any]) -> None:
        with self.lock:
            self.items.append(item)


class Handler(BaseHTTPRequestHandler):
    """Dispatches to the server's `routes` (method, path prefix) after the control paths."""

    server: StandinServer
    protocol_version = "HTTP/1.1"
    # keep-alive answers go out in two writes (headers, body): with Nagle on, the body
    # waits for the client's delayed ACK (~40 ms a response on Linux)
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def form(self, raw: bytes) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def _control(self, method: str, raw: bytes) -> bool:
        rec = self.server.recorder
        if self.path == "/_standin/health":
            self.reply(200, {"ok": True})
        elif self.path == "/_standin/received" and method == "GET":
            with rec.lock:
                self.reply(200, {"items": list(rec.items)})
        elif self.path == "/_standin/fail" and method == "POST":
            plan = json.loads(raw or b"{}")
            with rec.lock:
                rec.failures.extend([int(plan.get("status", 503))] * int(plan.get("times", 1)))
            self.reply(200, {"planned": len(rec.failures)})
        elif self.path == "/_standin/reset" and method == "POST":
            with rec.lock:
                rec.items.clear()
                rec.failures.clear()
            self.reply(200, {"ok": True})
        else:
            return False
        return True

    def _dispatch(self, method: str) -> None:
        raw = self.body()
        if self._control(method, raw):
            return
        for (m, prefix), route in self.server.routes.items():
            if m == method and self.path.split("?", 1)[0].startswith(prefix):
                status, body = route(self, self.path, raw)
                self.reply(status, body)
                return
        self.reply(404, {"error": "not found", "path": self.path})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")


class StandinServer(ThreadingHTTPServer):
    """A threaded HTTP server with a `Recorder` and `routes` {(method, prefix): route}."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: dict[tuple[str, str], Route]) -> None:
        super().__init__(address, Handler)
        self.recorder = Recorder()
        self.routes = routes

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> StandinServer:
        """Serve in a daemon thread (tests); returns self."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self
