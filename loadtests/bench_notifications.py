"""Notifications benchmark: fan-out throughput and SSE delivery latency.

Usage: `python -m loadtests.bench_notifications [--events 2000 --clients 500 --holds 200]`
(`make bench-notifications`; `--smoke` is the tiny run of the test suite). In a scratch
database (migrated, dropped at the end unless `--keep`), with the real processes:
`educonnect notifications relay --consumer notifications` and `--consumer live`, a Celery
worker (prefork, `--concurrency`), the API (`educonnect serve`), and an in-process SMTP
sink (aiosmtpd) on a free port.

1. Fan-out: `--events` confirmed bookings get their `booking.confirmed` outbox events in
   one committed transaction; each event notifies the student and the provider (email +
   in-app each). Measured: commit → every email received by the SMTP sink; printed as
   events/s and emails/s.
2. SSE latency: `--clients` EventSource-like clients (aiohttp) listen on
   `/api/v1/slots/{id}/events` spread over `--slots` group classes; `--holds` holds are
   committed (booking row + outbox event, one transaction each, `--rate` per second) and
   each client records when the `seat.held` of each outbox id reached it. Latency =
   receive time - the writer's commit time (same clock, same machine); p50/p95/p99/max
   over every (event, client) delivery. Target: p95 ≤ 250 ms.

Writes `artifacts/bench-notifications.json` with the machine described
(`loadtests.machine`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any

import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.settings import get_settings
from loadtests.machine import describe, one_line
from loadtests.stack import free_port
from standins.smtp import SmtpSink


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        v = values[0] if values else 0.0
        return {"p50": v, "p95": v, "p99": v, "max": v}
    q = quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def _wait(pred: Any, what: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


class Stack:
    """The processes under test, on the scratch database."""

    def __init__(
        self, url: str, smtp_port: int, api_port: int, concurrency: int, redis_url: str
    ) -> None:
        self.env = {
            **os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_port), "LOG_LEVEL": "WARNING", "WORKER_METRICS_PORT": "0",
            "INDEXER_METRICS_PORT": "0", "NOTIFICATIONS_POLL_INTERVAL_S": "0.5",
        }  # fmt: skip
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = Path("artifacts/bench-notifications-logs")
        self.logs.mkdir(parents=True, exist_ok=True)
        cli = [sys.executable, "-m", "cli"]
        self._start(
            "relay-notifications", [*cli, "notifications", "relay", "--consumer", "notifications"]
        )
        self._start("relay-live", [*cli, "notifications", "relay", "--consumer", "live"])
        self._start("api", [*cli, "serve", "--host", "127.0.0.1", "--port", str(api_port)])
        self._start("worker", [sys.executable, "-m", "celery", "-A", "core.celery_app", "worker",
                               "--pool=prefork", f"--concurrency={concurrency}", "--without-gossip",
                               "--without-mingle", "-n", f"bench-{uuid.uuid4().hex[:6]}@localhost",
                               "--loglevel=WARNING"])  # fmt: skip
        self.base = f"http://127.0.0.1:{api_port}"

    def _start(self, name: str, argv: list[str]) -> None:
        out = (self.logs / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        )

    def wait_ready(self) -> None:
        import httpx

        def up() -> bool:
            for p in self.procs:
                if p.poll() is not None:
                    raise SystemExit(f"a process exited early, see {self.logs}")
            try:
                return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        _wait(up, "the API", 60)
        from core.celery_app import app

        _wait(lambda: bool(app.control.ping(timeout=0.5)), "the Celery worker", 60)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _users(conn: psycopg.Connection[Any], n: int, role: str) -> list[Any]:
    rows = conn.execute(
        "INSERT INTO users (email, password_hash, full_name, role, locale)"
        " SELECT %s || '-' || g || '-' || %s || '@bench.test', 'x', 'Bench ' || g, %s,"
        "        CASE WHEN g %% 2 = 0 THEN 'fr' ELSE 'en' END"
        " FROM generate_series(1, %s) g RETURNING id",
        (role, uuid.uuid4().hex[:6], role, n),
    ).fetchall()
    return [r[0] for r in rows]


def _providers(conn: psycopg.Connection[Any], n: int) -> list[Any]:
    ids = _users(conn, n, "tutor")
    conn.execute(
        "INSERT INTO provider_profiles (user_id, kind, display_name, subjects, expertises, languages,"
        " hourly_rate_minor, currency) SELECT u, 'tutor', 'Tutor', '{mathematics}', '{}', '{fr}', 3000, 'EUR'"
        " FROM unnest(%s::uuid[]) u",
        (ids,),
    )
    return ids


def fan_out(url: str, sink: SmtpSink, events: int) -> dict[str, Any]:
    """Commit `events` booking.confirmed events at once; time until every email is in."""
    with psycopg.connect(url, autocommit=True) as conn:
        providers = _providers(conn, events)
        students = _users(conn, events, "student")
        start = datetime.now(UTC) + timedelta(days=7)
        conn.execute(
            "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity, status)"
            " SELECT p, %s, %s + interval '1 hour', 'online', 1, 'open' FROM unnest(%s::uuid[]) p",
            (start, start, providers),
        )
        conn.execute(
            """
            INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at, ends_at,
                                  status, hold_expires_at, price_minor, currency, cancel_policy)
            SELECT st, st, s.provider_id, s.id, 1, s.starts_at, s.ends_at, 'confirmed', now(), 3000,
                   'EUR', '{"source": "platform", "tiers": []}'::jsonb
            FROM unnest(%s::uuid[], %s::uuid[]) AS x(st, pr)
            JOIN availability_slots s ON s.provider_id = x.pr
            """,
            (students, providers),
        )
        before = len(sink.messages)
        with conn.transaction():
            conn.execute(
                "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                " SELECT 'booking', id::text, 'booking.confirmed',"
                "        jsonb_build_object('booking_id', id, 'slot_id', slot_id, 'provider_id', provider_id)"
                " FROM bookings WHERE student_id = ANY(%s::uuid[])",
                (students,),
            )
        t0 = time.perf_counter()
        expected = before + 2 * events
        _wait(lambda: len(sink.messages) >= expected, "every email", 60 + events / 5)
        seconds = time.perf_counter() - t0
    return {
        "events": events, "emails": 2 * events, "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds, 1), "emails_per_s": round(2 * events / seconds, 1),
    }  # fmt: skip


async def _client(base: str, slot: str, received: list[tuple[int, float]], ready: asyncio.Event,
                  connected: list[int]) -> None:  # fmt: skip
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"{base}/api/v1/slots/{slot}/events") as resp,
    ):
        assert resp.status == 200, resp.status
        connected[0] += 1
        if connected[0] == connected[1]:
            ready.set()
        event = ""
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "seat.held":
                received.append((int(json.loads(line[5:])["outbox_id"]), time.time()))


async def sse_latency(
    url: str, base: str, clients: int, slots: int, holds: int, rate: float
) -> dict[str, Any]:
    """`clients` SSE clients over `slots` group classes; `holds` committed holds at `rate`/s."""
    with psycopg.connect(url, autocommit=True) as conn:
        provider = _providers(conn, 1)[0]
        students = _users(conn, holds, "student")
        start = datetime.now(UTC) + timedelta(days=10)
        slot_ids = [
            str(conn.execute(
                "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity, status)"
                " VALUES (%s, %s, %s, 'online', %s, 'open') RETURNING id",
                (provider, start + timedelta(hours=2 * i), start + timedelta(hours=2 * i + 1), holds + 1),
            ).fetchone()[0])  # type: ignore[index]
            for i in range(slots)
        ]  # fmt: skip
    received: list[tuple[int, float]] = []
    ready = asyncio.Event()
    connected = [0, clients]
    tasks = [
        asyncio.create_task(_client(base, slot_ids[i % slots], received, ready, connected))
        for i in range(clients)
    ]
    await asyncio.wait_for(ready.wait(), timeout=120)
    await asyncio.sleep(0.5)  # every subscription registered in the hub
    commits: dict[int, float] = {}

    def write() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for k in range(holds):
                slot = slot_ids[k % slots]
                with conn.transaction():
                    b = conn.execute(
                        "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at,"
                        " ends_at, status, hold_expires_at, price_minor, currency, cancel_policy)"
                        " SELECT %s, %s, provider_id, id, 1, starts_at, ends_at, 'pending',"
                        " now() + interval '10 minutes', 3000, 'EUR', '{\"source\": \"platform\", \"tiers\": []}'"
                        " FROM availability_slots WHERE id = %s RETURNING id",
                        (students[k], students[k], slot),
                    ).fetchone()
                    oid = conn.execute(
                        "INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)"
                        " VALUES ('booking', %s, 'booking.held', jsonb_build_object('booking_id', %s::text,"
                        " 'slot_id', %s::text, 'provider_id', %s::text)) RETURNING id",
                        (str(b[0]), str(b[0]), slot, str(provider)),
                    ).fetchone()[0]  # type: ignore[index]
                commits[int(oid)] = time.time()
                time.sleep(1 / rate)

    await asyncio.to_thread(write)
    per_slot = clients // slots + (1 if clients % slots else 0)
    expected = sum(1 for k in range(holds) for i in range(clients) if i % slots == k % slots)
    deadline = time.monotonic() + 30
    while len(received) < expected and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll of a plain list
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = [(at - commits[oid]) * 1000 for oid, at in received if oid in commits]
    return {
        "clients": clients, "slots": slots, "clients_per_slot": per_slot, "holds": holds,
        "rate_per_s": rate, "deliveries_expected": expected, "deliveries": len(lat),
        "latency_ms": {k: round(v, 1) for k, v in _percentiles(lat).items()},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both parts; print and write the figures."""
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_notifications", description=__doc__)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--clients", type=int, default=500)
    p.add_argument("--slots", type=int, default=50)
    p.add_argument("--holds", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="holds per second")
    p.add_argument("--concurrency", type=int, default=2, help="Celery worker processes")
    p.add_argument("--smoke", action="store_true", help="tiny run (tests)")
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    p.add_argument("--out", type=Path, default=Path("artifacts/bench-notifications.json"))
    args = p.parse_args(argv)
    if args.smoke:
        args.events, args.clients, args.slots, args.holds, args.rate = 20, 10, 2, 6, 20.0
    s = get_settings()
    base_url = s.libpq_database_url
    name = base_url.rsplit("/", 1)[1].split("?")[0] + "_bench_notif"
    url = base_url.rsplit("/", 1)[0] + "/" + name
    admin = base_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)
    with psycopg.connect(url) as c:
        machine = describe(c)
    import redis

    redis.Redis.from_url(s.redis_url).flushdb()
    sink = SmtpSink("127.0.0.1", free_port()).start()
    stack = Stack(url, sink.port, free_port(), args.concurrency, s.redis_url)
    try:
        stack.wait_ready()
        fan = fan_out(url, sink, args.events)
        print(f"fan-out: {fan['events']} events → {fan['emails']} emails in {fan['seconds']} s "
              f"({fan['events_per_s']} events/s, {fan['emails_per_s']} emails/s)", flush=True)  # fmt: skip
        sse = asyncio.run(
            sse_latency(url, stack.base, args.clients, args.slots, args.holds, args.rate)
        )
        lat = sse["latency_ms"]
        print(f"SSE: {sse['clients']} clients, {sse['deliveries']}/{sse['deliveries_expected']} deliveries, "
              f"commit → wire p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms, max {lat['max']} ms "
              f"(target p95 ≤ 250 ms)", flush=True)  # fmt: skip
    finally:
        stack.stop()
        sink.stop()
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as a:
                a.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    result = {"machine": machine, "machine_line": one_line(machine), "fan_out": fan, "sse": sse,
              "at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"machine: {one_line(machine)}; written to {args.out}")
    return result


if __name__ == "__main__":
    main()
