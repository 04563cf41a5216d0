"""The HTTP server: uvicorn, one process per worker, each on its own listening socket.

Why not `uvicorn --workers N`: its workers share one listening socket, and an idle worker
accepts every connection pending when it wakes. Clients that hold keep-alive connections
(a load balancer's upstream pool, a benchmark's connections) then all land on one worker
while the others idle: with 16 connections opened together and 2 workers, 2 runs of 3 put
all 16 on one process here, and the API used one core of two. Here every worker binds its
own socket with `SO_REUSEPORT` (Linux ≥ 3.9, BSD), so the kernel spreads new connections
over the workers (by a hash of the connection's addresses; see socket(7)). Where the
option is missing, uvicorn's own multiprocess mode runs instead.

The parent supervises: SIGINT/SIGTERM stop every worker (each drains its requests, as
uvicorn does on that signal); a worker that dies otherwise is started again.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

APP = "api.app:create_app"
# A worker that dies sooner than this after its start is not restarted (a broken app or
# a taken port would otherwise restart in a loop): the server exits.
_MIN_UPTIME_S = 10.0


# Every server of ours: the app factory, our logging (structlog) and our access log line.
_UVICORN: dict[str, Any] = {"factory": True, "log_config": None, "access_log": False}


def _config(host: str, port: int, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(APP, host=host, port=port, **_UVICORN, **options)


def listeners(port: int) -> int | None:
    """How many TCP sockets listen on `port` (/proc/net/tcp and tcp6, state 0A); None
    where /proc/net has no such table (not Linux)."""
    n, found = 0, False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            n += fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
    return n if found else None


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with `SO_REUSEPORT` (and `SO_REUSEADDR`), not
    yet listening. OSError when the address is taken by a socket without the option."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, options: dict[str, Any]) -> None:
    """One worker process: its own socket, one uvicorn server."""
    config = _config(host, port, **options)
    uvicorn.Server(config).run(sockets=[reuseport_socket(host, port)])


def serve(host: str, port: int, workers: int = 1, *, reload: bool = False, **options: Any) -> None:
    """Serve the API on host:port with `workers` processes (see the module docstring), or
    one process restarted on code changes (`reload`, development); `options`: more
    `uvicorn.Config` arguments (`loop`, `http`, `log_level`...). Blocks until
    SIGINT/SIGTERM; raises SystemExit(1) when a worker dies within `_MIN_UPTIME_S` of its
    start."""
    if reload or not hasattr(socket, "SO_REUSEPORT"):
        uvicorn.run(APP, host=host, port=port, workers=workers, reload=reload,
                    **_UVICORN, **options)  # fmt: skip
        return
    if workers <= 1:
        uvicorn.Server(_config(host, port, **options)).run()
        return
    reuseport_socket(host, port).close()  # fail here, once, if the port is taken
    spawn = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> tuple[BaseProcess, float]:
        p = spawn.Process(target=_worker, args=(host, port, options), daemon=False)
        p.start()
        return p, time.monotonic()

    procs = [start() for _ in range(workers)]

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True  # the loop below sends the workers SIGTERM (uvicorn drains)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    failed = False
    while not stopping:
        for i, (p, started) in enumerate(procs):
            p.join(timeout=0.5 / workers)
            if p.exitcode is None or stopping:
                continue
            if time.monotonic() - started < _MIN_UPTIME_S:
                failed = stopping = True
                break
            procs[i] = start()
    for p, _ in procs:
        if p.is_alive():
            p.terminate()
    for p, _ in procs:
        p.join()
    if failed:
        raise SystemExit(1)
