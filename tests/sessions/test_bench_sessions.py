"""The session-token benchmark at a tiny scale: it seeds, starts the stand-in and the API,
creates the rooms, runs the open loop, and reports without errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import bench_sessions
from tests.sessions.livekit_standin import free_port


@pytest.mark.slow
def test_bench_sessions_smoke(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench-sessions.json"
    report = bench_sessions.main(
        [
            "--lessons", "3", "--group-classes", "1", "--rate", "20", "--seconds", "1",
            "--workers", "1", "--port", str(free_port()),
            "--livekit-port", str(free_port()), "--out", str(out),
        ]
    )  # fmt: skip
    assert report["rooms"] == 4
    assert report["participants"] == 2 * (3 + 8)
    assert report["first_token_with_room_creation_ms"]["errors"] == 0
    steady = report["token_issue_open_loop_ms"]
    assert steady["n"] == 20
    assert steady["errors"] == 0
    assert steady["statuses"] == {"200": 20}
    assert json.loads(out.read_text())["machine"]["cores"] >= 1
