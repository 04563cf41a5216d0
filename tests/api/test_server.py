"""`educonnect serve` (`cli/serve.py`): uvicorn on the app factory, with `--workers`
processes; SIGTERM stops them all and frees the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import TEST_REDIS_URL, free_port

ROOT = Path(__file__).resolve().parents[2]


def _listening(port: int) -> bool:
    """Whether a TCP socket listens on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_serve_with_workers_answers_and_stops_on_sigterm(database_url: str) -> None:
    port = free_port()
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=TEST_REDIS_URL,
               LOG_LEVEL="WARNING")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not answer"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    assert r.read() == b'{"status":"ok"}'
                    break
            except OSError:
                time.sleep(0.1)
        if Path(f"/proc/{proc.pid}/task/{proc.pid}/children").exists():
            assert len(_children(proc.pid)) >= 2  # uvicorn's supervisor and its workers
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not _listening(port)


def test_reload_with_workers_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--reload", "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--reload runs one process" in proc.stderr
