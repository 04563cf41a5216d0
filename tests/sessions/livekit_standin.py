"""The LiveKit stand-in as a test fixture: `python -m standins.livekit` in a subprocess
on a free port (over real HTTP), the API pointed at it through `LIVEKIT_URL`,
`LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`, and a small client for its controls."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, settings_env

API_KEY = "test-key"
API_SECRET = "test-secret-0123456789abcdef0123456789abcdef"


class StandIn:
    """The running stand-in: its URLs, and its `/_standin` controls."""

    def __init__(self, port: int, proc: subprocess.Popen[str]) -> None:
        self.port = port
        self.proc = proc
        self.http_url = f"http://127.0.0.1:{port}"
        self.url = f"ws://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.http_url, timeout=10)

    def join(self, token: str, *, at: float | None = None, sid: str | None = None) -> Any:
        """Connect the holder of `token`; returns the response (webhooks in its JSON)."""
        return self.http.post("/_standin/join", json={"token": token, "at": at, "sid": sid})

    def leave(self, room: str, identity: str, *, at: float | None = None) -> Any:
        """Disconnect `identity` from `room`."""
        return self.http.post(
            "/_standin/leave", json={"room": room, "identity": identity, "at": at}
        )

    def webhook(self, **event: Any) -> dict[str, Any]:
        """A signed webhook of any event (`event`, `room`, `identity`, `sid`, `at`, `id`)."""
        r = self.http.post("/_standin/webhook", json=event)
        r.raise_for_status()
        return dict(r.json()["webhooks"][0])

    def sign_body(self, body: str) -> str:
        """The Authorization token LiveKit would send with `body`."""
        r = self.http.post("/_standin/sign", content=body.encode())
        r.raise_for_status()
        return str(r.json()["authorization"])

    def state(self) -> dict[str, Any]:
        """Rooms, participants and API call counts."""
        return dict(self.http.get("/_standin/state").json())

    def reset(self) -> None:
        """Forget every room, participant and call count."""
        self.http.post("/_standin/reset").raise_for_status()


def start_standin(extra_args: list[str] | None = None) -> StandIn:
    """Start `python -m standins.livekit` and wait for its "listening" line."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.livekit", "--port", str(port), *(extra_args or [])],
        env={**os.environ, "LIVEKIT_API_KEY": API_KEY, "LIVEKIT_API_SECRET": API_SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until bound (or the process died)
    assert "listening" in line, f"stand-in did not start: {line}{proc.stdout.read()}"
    return StandIn(port, proc)


def stop_standin(standin: StandIn) -> None:
    """Terminate the stand-in process."""
    standin.http.close()
    standin.proc.terminate()
    try:
        standin.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        standin.proc.kill()
        standin.proc.wait(timeout=10)


@pytest.fixture(scope="session", name="livekit_server")
def livekit_server_fixture() -> Iterator[StandIn]:
    """One stand-in for the run; the process environment points the API at it."""
    standin = start_standin()
    env = {"LIVEKIT_URL": standin.url, "LIVEKIT_API_KEY": API_KEY, "LIVEKIT_API_SECRET": API_SECRET}
    with settings_env(env):
        yield standin
    stop_standin(standin)


@pytest.fixture(name="livekit")
def livekit_fixture(livekit_server: StandIn) -> Iterator[StandIn]:
    """The stand-in, emptied before and after the test."""
    livekit_server.reset()
    yield livekit_server
    livekit_server.reset()
