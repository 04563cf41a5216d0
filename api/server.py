"""The HTTP server: uvicorn, one process per worker, connections dealt round-robin.

Why not `uvicorn --workers N`: its workers share one listening socket, and an idle worker
accepts every connection pending when it wakes. Clients that hold keep-alive connections
(a load balancer's upstream pool, a benchmark's connections) then all land on one worker
while the others idle: with 16 connections opened together and 2 workers, 2 runs of 3 put
all 16 on one process here, and the API used one core of two. One `SO_REUSEPORT` socket
per worker (this module until session 8) spreads them by a hash of the connection's
addresses (socket(7)): a binomial split, 16 connections went 13/3 in some runs, and the
clients of the busier worker wait for ~twice as many requests ahead of theirs.

So the parent (the supervisor) listens, accepts, and deals each connection to the next
worker in turn over a Unix socket pair (`SCM_RIGHTS`, `socket.send_fds`): the cluster
module of Node.js does the same by default ("round-robin approach", nodejs.org/api/
cluster.html). Every worker holds within one of its share of the connections; the
accepted socket is then the worker's alone (`loop.connect_accepted_socket`), its
requests never pass through the parent. Where `send_fds` is missing (not Unix), uvicorn's
own multiprocess mode runs instead.

The parent supervises: SIGINT/SIGTERM stop the accepting, then every worker (each drains
its requests, as uvicorn does on that signal); a worker that dies otherwise is started
again, and gets its turn again once up.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

import uvicorn

from api.coalesce import HTTP_PROTOCOL

APP = "api.app:create_app"
# A worker that dies sooner than this after its start is not restarted (a broken app or
# a taken port would otherwise restart in a loop): the server exits.
_MIN_UPTIME_S = 10.0
# How often the accepting thread looks whether the server is stopping (seconds).
_ACCEPT_POLL_S = 0.25
# Connections a worker takes from its channel per wake-up.
_FDS_PER_READ = 64


# Every server of ours: the app factory, our logging (structlog) and our access log line,
# one send per response (`api.coalesce`).
_UVICORN: dict[str, Any] = {
    "factory": True, "log_config": None, "access_log": False, "http": HTTP_PROTOCOL,
}  # fmt: skip


def _config(host: str, port: int, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(APP, host=host, port=port, **{**_UVICORN, **options})


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


class _DealtServer(uvicorn.Server):
    """A worker's uvicorn server without a listening socket of its own: it serves the
    connections the supervisor deals it over `channel` (one byte and one file descriptor
    per connection, `socket.send_fds`). Exits when the supervisor's end closes."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self._channel = channel
        self._opening: set[asyncio.Task[Any]] = set()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # no socket to listen on: uvicorn runs the lifespan startup and marks started
        await super().startup(sockets=[])
        if not self.started:
            return
        loop = asyncio.get_running_loop()
        protocol = functools.partial(  # what uvicorn's own startup passes to its servers
            self.config.http_protocol_class,  # typed as asyncio.Protocol: no such arguments
            config=self.config,
            server_state=self.server_state,  # type: ignore[call-arg]
            app_state=self.lifespan.state,
        )
        self._channel.setblocking(False)
        loop.add_reader(self._channel.fileno(), self._receive, loop, protocol)

    def _receive(self, loop: asyncio.AbstractEventLoop, protocol: Any) -> None:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self._channel, _FDS_PER_READ, _FDS_PER_READ)
        except BlockingIOError:
            return
        if not msg:  # the supervisor is gone: stop like on SIGTERM
            loop.remove_reader(self._channel.fileno())
            self.should_exit = True
            return
        for fd in fds:
            sock = socket.socket(fileno=fd)
            task = loop.create_task(loop.connect_accepted_socket(protocol, sock))
            self._opening.add(task)
            task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[Any]) -> None:
        self._opening.discard(task)
        if not task.cancelled():
            task.exception()  # a client gone before its transport was set up: retrieved

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._channel.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._channel.close()  # connections dealt but not taken are closed with it
        await super().shutdown(sockets=sockets)


def _worker(host: str, port: int, channel: socket.socket, options: dict[str, Any]) -> None:
    """One worker process: one uvicorn server over the connections dealt to it."""
    _DealtServer(_config(host, port, **options), channel).run()


class _Dealer(threading.Thread):
    """The supervisor's accepting thread: accepts on `listener` and sends each connection
    to the next worker's channel in turn, skipping a worker whose channel is closed
    (restarting) or full (not taking connections); closes its own copy of the socket."""

    def __init__(self, listener: socket.socket, channels: list[socket.socket]) -> None:
        super().__init__(name="educonnect-dealer", daemon=True)
        self.listener, self.channels = listener, channels
        self.stopping = threading.Event()
        self.dealt = 0

    def run(self) -> None:
        self.listener.settimeout(_ACCEPT_POLL_S)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # out of descriptors, or a client reset in the backlog
                self.stopping.wait(_ACCEPT_POLL_S / 10)
                continue
            with conn:
                n = len(self.channels)
                for k in range(n):
                    channel = self.channels[(self.dealt + k) % n]
                    try:
                        socket.send_fds(channel, [b"c"], [conn.fileno()])
                    except OSError:
                        continue
                    self.dealt = (self.dealt + k + 1) % n
                    break
                # no worker could take it: closing it resets the client


def serve(host: str, port: int, workers: int = 1, *, reload: bool = False, **options: Any) -> None:
    """Serve the API on host:port with `workers` processes (see the module docstring), or
    one process restarted on code changes (`reload`, development); `options`: more
    `uvicorn.Config` arguments (`loop`, `http`, `log_level`...). Blocks until
    SIGINT/SIGTERM; raises OSError when the address is taken, SystemExit(1) when a worker
    dies within `_MIN_UPTIME_S` of its start."""
    if reload or not hasattr(socket, "send_fds"):
        uvicorn.run(APP, host=host, port=port, workers=workers, reload=reload,
                    **{**_UVICORN, **options})  # fmt: skip
        return
    if workers <= 1:
        uvicorn.Server(_config(host, port, **options)).run()
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=2048)
    spawn = multiprocessing.get_context("spawn")
    channels: list[socket.socket] = []
    stopping = False

    def start(i: int) -> tuple[BaseProcess, float]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)  # a worker that is not reading is skipped, not waited for
        p = spawn.Process(target=_worker, args=(host, port, theirs, options), daemon=False)
        p.start()
        theirs.close()
        if i < len(channels):
            old, channels[i] = channels[i], ours
            old.close()
        else:
            channels.append(ours)
        return p, time.monotonic()

    procs = [start(i) for i in range(workers)]
    dealer = _Dealer(listener, channels)
    dealer.start()

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
            procs[i] = start(i)
    dealer.stopping.set()
    dealer.join()
    listener.close()
    for p, _ in procs:
        if p.is_alive():
            p.terminate()
    for p, _ in procs:
        p.join()
    for channel in channels:
        channel.close()
    if failed:
        raise SystemExit(1)
