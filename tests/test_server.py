"""`educonnect serve --workers 2` (`api.server`): the supervisor deals connections to the
workers in turn, so keep-alive connections opened together split evenly, and SIGTERM
stops them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from api.server import listeners
from tests.conftest import TEST_REDIS_URL

ROOT = Path(__file__).resolve().parent.parent


def _sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, remote port, inode) of the TCP sockets bound to local `port`
    (/proc/net/tcp*; state 0A = LISTEN, 01 = ESTABLISHED)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    out.append((fields[3], int(fields[2].rsplit(":", 1)[1], 16), int(fields[9])))
    return out


def _owners(parent: int) -> dict[int, int]:
    """socket inode -> pid, over the child processes of `parent`."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    owner = {}
    for pid in map(int, children):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                owner[int(target[8:-1])] = pid
    return owner


def _get(sock: socket.socket, path: str) -> bytes:
    """One keep-alive HTTP/1.1 GET on `sock`: the response body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return body


@pytest.mark.skipif(not hasattr(socket, "send_fds"), reason="needs socket.send_fds (Unix)")
def test_workers_take_turns_at_connections_and_stop_on_sigterm(database_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, DATABASE_URL=database_url, REDIS_URL=TEST_REDIS_URL,
               LOG_LEVEL="WARNING")  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while (listeners(port) or 0) < 1:
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not listen"
            time.sleep(0.05)
        conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(24)]
        try:
            for c in conns:
                assert b'"ok"' in _get(c, "/healthz")
            # the worker process holding the server side of each connection
            inode = {remote: ino for state, remote, ino in _sockets(port) if state == "01"}
            owner = _owners(proc.pid)
            served = Counter(owner[inode[c.getsockname()[1]]] for c in conns)
        finally:
            for c in conns:
                c.close()
        # dealt in turn: 12 each, whichever worker got the first
        assert sorted(served.values()) == [12, 12], served
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert listeners(port) == 0
