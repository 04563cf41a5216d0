"""The booking benchmark's load generator: a process of its own with a lean HTTP/1.1 client.

`python -m loadtests.holdgen JOB.json` reads a job, sends `POST /api/v1/bookings` holds
and prints one JSON object (its results) on stdout. It imports nothing of the project,
so its CPU and its event loop are apart from the API's and from the measuring process
(`loadtests/bench_booking.py` starts it, one or several at once).

Job (JSON): `host`, `port`, `mode` and `items` (`[token, slot_id]` pairs, each sent
once, with a fresh `Idempotency-Key`), plus per mode:

* `open`: `rate` (requests/s of this process), `start` (a `time.monotonic()` instant:
  the system-wide clock, so several processes share one schedule), `phase` (s added to
  every scheduled instant, to interleave processes) and `connections` (opened before the
  start; more are opened when all are busy). Request i is sent at
  `start + phase + i / rate` whatever the answers so far; its latency runs from that
  scheduled instant to the end of the response (coordinated omission corrected).
* `closed`: `clients` connections, each sending the next item as soon as its previous
  answer arrived, for `seconds`; latency from each send.
* `burst`: one connection per item, all connected first, then every request written at
  once; latency from that instant.

Result: `latency_ms` (list, one per answered request), `statuses` (`"201"`, `"409
sold_out"`, `"0 <error>"` when no answer came), `first_send`/`last_send`/`last_done`
(monotonic s), `send_lag_ms` (actual minus scheduled send, open mode), `sent`, and
`cpu_s` (this process's user + system CPU for the job, its start-up excluded).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import uuid
from typing import Any

TIMEOUT_S = 30.0
IDLE_REUSE_S = 2.0  # uvicorn closes keep-alive connections idle for 5 s (its default)


class Conn:
    """One keep-alive HTTP/1.1 connection to the API."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.used = 0  # requests answered on it
        self.idle_since = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        """Connect to `host`:`port`."""
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def close(self) -> None:
        """Close the socket."""
        self.writer.close()

    def write_hold(self, host_header: bytes, token: str, slot: str) -> None:
        """Queue one hold request on the socket (sent when the loop next runs)."""
        body = b'{"slot_id":"' + slot.encode() + b'"}'
        self.writer.write(
            b"POST /api/v1/bookings HTTP/1.1\r\nHost: " + host_header
            + b"\r\nAuthorization: Bearer " + token.encode()
            + b'\r\nIdempotency-Key: "' + uuid.uuid4().hex.encode()
            + b'"\r\nContent-Type: application/json\r\nContent-Length: '
            + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip

    async def read_response(self) -> tuple[int, bytes, bool]:
        """(status, body, keep-alive) of the next response on the socket."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, keep = 0, False, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                keep = False
        if not chunked:
            return status, await self.reader.readexactly(length), keep
        body = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return status, body, keep
            body += chunk[:-2]


def _key(status: int, body: bytes) -> str:
    if status < 400:
        return str(status)
    try:
        code = json.loads(body).get("code", "")
    except ValueError:
        code = ""
    return f"{status} {code}".strip()


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Run:
    """What one job collects."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.host, self.port = str(job["host"]), int(job["port"])
        self.host_header = f"{self.host}:{self.port}".encode()
        self.items: list[list[str]] = job["items"]
        self.latency_ms: list[float] = []
        self.statuses: dict[str, int] = {}
        self.send_lag_ms: list[float] = []
        self.first_send = self.last_send = self.last_done = 0.0
        self.sent = 0
        self.cpu_at_start = _cpu_s()

    def count(self, key: str) -> None:
        self.statuses[key] = self.statuses.get(key, 0) + 1

    async def exchange(self, conn: Conn | None, item: list[str], t_from: float) -> Conn | None:
        """Send one hold on `conn` (a new connection when None, or when `conn` sat idle
        long enough for the server to close it); record its latency from `t_from`;
        return the connection when it may be reused.

        A reused connection that the server closed before answering (its keep-alive
        timeout crossed our write) is replaced and the request sent again, as HTTP
        clients do (the Idempotency-Key makes that safe anyway)."""
        if conn is not None and time.monotonic() - conn.idle_since > IDLE_REUSE_S:
            conn.close()
            conn = None
        try:
            if conn is None:
                conn = await asyncio.wait_for(Conn.open(self.host, self.port), TIMEOUT_S)
            now = time.monotonic()
            self.first_send = self.first_send or now
            self.last_send = now
            self.sent += 1
            conn.write_hold(self.host_header, item[0], item[1])
            try:
                status, body, keep = await asyncio.wait_for(conn.read_response(), TIMEOUT_S)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                if not conn.used:
                    raise
                conn.close()
                conn = await asyncio.wait_for(Conn.open(self.host, self.port), TIMEOUT_S)
                conn.write_hold(self.host_header, item[0], item[1])
                status, body, keep = await asyncio.wait_for(conn.read_response(), TIMEOUT_S)
            conn.used += 1
            conn.idle_since = time.monotonic()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.count(f"0 {type(exc).__name__}")
            if conn is not None:
                conn.close()
            return None
        done = time.monotonic()
        self.last_done = max(self.last_done, done)
        self.latency_ms.append((done - t_from) * 1000)
        self.count(_key(status, body))
        if not keep:
            conn.close()
            return None
        return conn

    def result(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms, "statuses": self.statuses,
            "send_lag_ms": self.send_lag_ms, "sent": self.sent,
            "first_send": self.first_send, "last_send": self.last_send,
            "last_done": self.last_done, "cpu_s": _cpu_s() - self.cpu_at_start,
        }  # fmt: skip


async def open_loop(run: Run, job: dict[str, Any]) -> None:
    """Each item at its scheduled instant, on an idle connection or a new one."""
    rate, start, phase = float(job["rate"]), float(job["start"]), float(job.get("phase", 0))
    idle: list[Conn] = []
    for _ in range(int(job.get("connections", 8))):
        idle.append(await Conn.open(run.host, run.port))
    tasks: set[asyncio.Task[None]] = set()

    async def one(item: list[str], scheduled: float) -> None:
        run.send_lag_ms.append((time.monotonic() - scheduled) * 1000)
        conn = await run.exchange(idle.pop() if idle else None, item, scheduled)
        if conn is not None:
            idle.append(conn)

    for i, item in enumerate(run.items):
        scheduled = start + phase + i / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(item, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    for c in idle:
        c.close()


async def closed_loop(run: Run, job: dict[str, Any]) -> None:
    """`clients` connections sending back to back until `seconds` have passed."""
    deadline = time.monotonic() + float(job["seconds"])
    items = iter(run.items)

    async def client() -> None:
        conn: Conn | None = await Conn.open(run.host, run.port)
        for item in items:
            if time.monotonic() >= deadline:
                break
            conn = await run.exchange(conn, item, time.monotonic())
        if conn is not None:
            conn.close()

    await asyncio.gather(*(client() for _ in range(int(job["clients"]))))


async def burst(run: Run, job: dict[str, Any]) -> None:
    """Every item on its own connection, all written at the same instant."""
    conns = await asyncio.gather(*(Conn.open(run.host, run.port) for _ in run.items))
    go = asyncio.Event()
    t0 = 0.0

    async def one(conn: Conn, item: list[str]) -> None:
        await go.wait()
        c = await run.exchange(conn, item, t0)
        if c is not None:
            c.close()

    tasks = [asyncio.create_task(one(c, it)) for c, it in zip(conns, run.items, strict=True)]
    await asyncio.sleep(0)
    t0 = time.monotonic()
    go.set()
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    with open(args[0], encoding="utf-8") as f:
        job = json.load(f)
    run = Run(job)
    mode = {"open": open_loop, "closed": closed_loop, "burst": burst}[job["mode"]]
    try:
        import uvloop

        uvloop.run(mode(run, job))
    except ImportError:
        asyncio.run(mode(run, job))
    sys.stdout.write(json.dumps(run.result()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
