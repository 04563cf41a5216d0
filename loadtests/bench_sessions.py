"""Session-token benchmark: LiveKit token issue latency over HTTP, open loop.

Usage: `python -m loadtests.bench_sessions [--lessons 400 --rate 100 --seconds 30
--workers 2]`. In a scratch database (the configured database's name +
`_bench_sessions`, dropped and migrated at the start, dropped at the end unless `--keep`):

1. Seed `--lessons` confirmed 1:1 lessons starting in 5 minutes (one provider and one
   student each: the window is open) and `--group-classes` group classes of 8 attendees.
2. Start the LiveKit stand-in (`python -m standins.livekit`) and the API
   (`educonnect serve --workers N`) pointed at it.
3. First tokens: one request per room, sequentially — each creates its LiveKit room
   (CreateRoom over HTTP, then the `session_rooms` row). Reported separately.
4. Open loop: `--rate` requests/s for `--seconds`, each scheduled at its own instant
   whatever the previous ones did (no coordinated omission: latency is measured from the
   scheduled instant), a random participant of a random lesson asking for its token
   (`POST /api/v1/bookings/{id}/session-token`; rooms exist, so no LiveKit call).

Prints and writes `artifacts/bench-sessions.json`: p50/p95/p99/max (ms), achieved rate,
errors, CPU per request (API, PostgreSQL, machine), the machine (`loadtests.machine`).
Target: token issue p95 <= 10 ms at 100 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx
import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.security import create_access_token
from core.settings import get_settings
from loadtests.bench_search import _cpu_ticks, cpu_per_request, serve
from loadtests.machine import describe, one_line

API_KEY = "bench-key"
API_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"  # noqa: S105 - a scratch stand-in key
TARGET_P95_MS = 10.0


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of `values` (ms), rounded to 0.01."""
    if len(values) < 2:
        v = values[0] if values else 0.0
        return {"p50": v, "p95": v, "p99": v, "max": v}
    q = quantiles(values, n=100, method="inclusive")
    return {k: round(v, 2) for k, v in (("p50", q[49]), ("p95", q[94]), ("p99", q[98]),
                                        ("max", max(values)))}  # fmt: skip


def scratch_database(keep_name: str | None = None) -> tuple[str, str, str]:
    """(libpq URL, maintenance URL, name) of the benchmark's scratch database."""
    base = get_settings().libpq_database_url
    name = keep_name or base.rsplit("/", 1)[1].split("?")[0] + "_bench_sessions"
    return base.rsplit("/", 1)[0] + "/" + name, base.rsplit("/", 1)[0] + "/postgres", name


def recreate(admin: str, name: str) -> None:
    """Drop and create the scratch database."""
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop(admin: str, name: str) -> None:
    """Drop the scratch database."""
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed_lessons(url: str, lessons: int, groups: int, group_size: int = 8) -> list[dict[str, Any]]:
    """Confirmed lessons starting in 5 minutes; returns one dict per booking:
    `{booking, student, provider}` (a group class: one per attendee, same provider)."""
    out: list[dict[str, Any]] = []
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for i in range(lessons + groups):
            group = i >= lessons
            provider = conn.execute(
                "INSERT INTO users (email, password_hash, full_name, role)"
                " VALUES (%s, 'x', %s, 'tutor') RETURNING id",
                (f"tutor{i}@bench.invalid", f"Tutor {i}"),
            ).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO provider_profiles (user_id, kind, display_name, languages,"
                " hourly_rate_minor, currency) VALUES (%s, 'tutor', %s, '{en}', 3000, 'EUR')",
                (provider, f"Tutor {i}"),
            )
            slot = conn.execute(
                "INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity)"
                " VALUES (%s, now() + interval '5 minutes', now() + interval '65 minutes',"
                " 'online', %s) RETURNING id",
                (provider, group_size if group else 1),
            ).fetchone()[0]  # type: ignore[index]
            for j in range(group_size if group else 1):
                student = conn.execute(
                    "INSERT INTO users (email, password_hash, full_name, role)"
                    " VALUES (%s, 'x', %s, 'student') RETURNING id",
                    (f"student{i}-{j}@bench.invalid", f"Student {i}-{j}"),
                ).fetchone()[0]  # type: ignore[index]
                booking = conn.execute(
                    "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats,"
                    " starts_at, ends_at, status, hold_expires_at, price_minor, currency,"
                    " cancel_policy, confirmed_at) SELECT %s, %s, %s, s.id, 1, s.starts_at,"
                    " s.ends_at, 'confirmed', now(), 3000, 'EUR', '{}'::jsonb, now()"
                    " FROM availability_slots s WHERE s.id = %s RETURNING id",
                    (student, student, provider, slot),
                ).fetchone()[0]  # type: ignore[index]
                out.append({"booking": booking, "student": student, "provider": provider})
        conn.execute("ANALYZE")
    return out


def start_standin(port: int) -> subprocess.Popen[str]:
    """`python -m standins.livekit` on `port`, once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.livekit", "--port", str(port),
         "--api-key", API_KEY, "--api-secret", API_SECRET],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        raise SystemExit(f"the LiveKit stand-in did not start: {line}")
    return proc


def requests_for(bookings: list[dict[str, Any]]) -> list[tuple[str, dict[str, str]]]:
    """Every (token URL, auth headers) pair: each booking's student and provider."""
    out = []
    for b in bookings:
        url = f"/api/v1/bookings/{b['booking']}/session-token"
        for who, role in ((b["student"], "student"), (b["provider"], "tutor")):
            token = create_access_token(user_id=uuid.UUID(str(who)), role=role, ttl_s=3600)
            out.append((url, {"Authorization": f"Bearer {token}"}))
    return out


async def first_tokens(base: str, reqs: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    """One request per room, sequentially: each creates the room (CreateRoom + insert)."""
    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for url, headers in reqs:
            t = time.perf_counter()
            try:
                ok = (await client.post(url, headers=headers)).status_code == 200
            except httpx.HTTPError:  # counted, not fatal: an overloaded machine drops some
                ok = False
            lat.append((time.perf_counter() - t) * 1000)
            errors += not ok
    return {**percentiles(lat), "n": len(lat), "errors": errors}


async def open_loop(
    base: str, reqs: list[tuple[str, dict[str, str]]], rate: float, seconds: float, seed: int = 7
) -> dict[str, Any]:
    """`rate` requests/s for `seconds`, each sent at its scheduled instant; latency from
    that instant (includes any queueing in the client or the server)."""
    rng = random.Random(seed)
    n = max(1, int(rate * seconds))
    lat: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    late = 0
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2

        async def one(i: int) -> None:
            nonlocal late
            scheduled = t0 + i / rate
            await asyncio.sleep(max(0.0, scheduled - loop.time()))
            start = loop.time()
            if start - scheduled > 0.002:
                late += 1
            url, headers = rng.choice(reqs)
            try:
                status = (await client.post(url, headers=headers)).status_code
            except httpx.HTTPError:  # a transport failure or a pool timeout: status 0
                status = 0
            end = loop.time()
            lat.append((end - scheduled) * 1000)
            service.append((end - start) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - began - 0.2
    return {
        **percentiles(lat),
        "service_ms": percentiles(service),
        "n": n,
        "req_per_s": round(n / max(elapsed, 1e-9), 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": n - statuses.get(200, 0),  # status "0": no HTTP answer
        "sent_late_over_2ms": late,
        "client": f"httpx open loop in the benchmark process, {rate:g} req/s scheduled",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns (and writes) the report."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--lessons", type=int, default=400, help="1:1 lessons (rooms)")
    ap.add_argument("--group-classes", type=int, default=10, help="group classes of 8")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--port", type=int, default=8166)
    ap.add_argument("--livekit-port", type=int, default=8167)
    ap.add_argument("--out", default="artifacts/bench-sessions.json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args(argv)

    url, admin, name = scratch_database()
    recreate(admin, name)
    upgrade("head", url)
    bookings = seed_lessons(url, args.lessons, args.group_classes)
    with psycopg.connect(url) as conn:
        machine = describe(conn)
    machine["loadavg_before"] = os.getloadavg()
    lk = start_standin(args.livekit_port)
    livekit_env = {
        "LIVEKIT_URL": f"ws://127.0.0.1:{args.livekit_port}",
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
    }
    saved = {k: os.environ.get(k) for k in livekit_env}
    os.environ.update(livekit_env)  # `serve` passes this process's environment on
    try:
        api = serve(url, args.port, cache=False, workers=args.workers)
    except BaseException:
        lk.terminate()
        raise
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    base = f"http://127.0.0.1:{args.port}"
    try:
        reqs = requests_for(bookings)
        # one request per room: a student of each lesson (group attendees share a room)
        seen: set[str] = set()
        firsts = []
        for b, (u, h) in zip([x for x in bookings for _ in (0, 1)], reqs, strict=True):
            key = str(b["provider"])
            if key not in seen:
                seen.add(key)
                firsts.append((u, h))
        first = asyncio.run(first_tokens(base, firsts))
        asyncio.run(open_loop(base, reqs, args.rate, min(2.0, args.seconds)))  # warm-up
        before = _cpu_ticks(api.pid)
        steady = asyncio.run(open_loop(base, reqs, args.rate, args.seconds))
        after = _cpu_ticks(api.pid)
        if before and after:
            steady["cpu_us_per_request"] = cpu_per_request(before, after, steady["n"])
    finally:
        api.terminate()
        api.wait(timeout=10)
        lk.terminate()
        lk.wait(timeout=10)
        if not args.keep:
            drop(admin, name)
    machine["loadavg_after"] = os.getloadavg()
    report = {
        "machine": machine,
        "params": vars(args),
        "rooms": len(firsts),
        "participants": len(reqs),
        "first_token_with_room_creation_ms": first,
        "token_issue_open_loop_ms": steady,
        "target_p95_ms": TARGET_P95_MS,
        "target_met": steady["p95"] <= TARGET_P95_MS and steady["errors"] == 0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"machine: {one_line(machine)}; load before {machine['loadavg_before']}")
    print(f"first token (creates the room), {first['n']} rooms, sequential: "
          f"p50 {first['p50']} p95 {first['p95']} p99 {first['p99']} ms, errors {first['errors']}")  # fmt: skip
    print(f"token issue, open loop {args.rate:g} req/s x {args.seconds:g} s "
          f"({steady['req_per_s']} req/s achieved, {steady['n']} requests, "
          f"errors {steady['errors']}): p50 {steady['p50']} p95 {steady['p95']} "
          f"p99 {steady['p99']} max {steady['max']} ms; target p95 <= {TARGET_P95_MS} ms: "
          f"{'met' if report['target_met'] else 'NOT met'}")  # fmt: skip
    if "cpu_us_per_request" in steady:
        print(f"CPU per request (µs): {steady['cpu_us_per_request']}")
    return report


if __name__ == "__main__":
    main()
