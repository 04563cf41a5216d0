"""Booking benchmark: hold latency open loop, saturation throughput, and a contention run.

Usage: `python -m loadtests.bench_booking [--rate 100 --seconds 30 ...]` (`make
bench-booking`); `--smoke` runs a tiny version (the test suite's check of its invariants).

Method. A scratch database (`<DATABASE_URL's name>_bench_booking`, dropped and re-created,
migrated) is seeded directly in SQL: `--providers` tutors with `--slots` slots each of
`--capacity` seats a week ahead, `--students` students, and one `--class-seats`-seat group
class. The API runs as its own processes (`api.server.serve`: uvicorn, `--workers`
workers, the connections dealt round-robin) on 127.0.0.1:`--port`; the load comes from
httpx (async, keep-alive) in this process. Every request is `POST /api/v1/bookings` with
a bearer token and a fresh `Idempotency-Key`, each from a student that books only once
(so no 409 `overlapping_booking`); a 201 is a hold taken.

1. Open loop: `--rate` requests/s for `--seconds`, each sent at its scheduled instant
   whatever the answers so far (a task per request); its latency runs from the scheduled
   instant to the response, so a stall delays the requests behind it and shows in the
   figures (no coordinated omission). Target: p95 ≤ 25 ms at 100 requests/s.
2. Saturation: `--clients` clients in a closed loop (send, wait, send) for
   `--closed-seconds`: the throughput the stack sustains, and its latencies.
3. Contention: `--contenders` students at once on the `--class-seats`-seat class: exactly
   that many seats held, the others 409 `sold_out`, no 5xx; p95 of those requests.

Then the database is checked: no slot holds more seats than its capacity and every
counter equals the seats of its seat-holding bookings. Exits non-zero when an invariant
fails (not when a latency target is missed: figures on a shared machine are rough).
Writes `artifacts/bench-booking.json` (or `--out`) with the machine described.
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

import httpx
import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.security import create_access_token
from core.settings import get_settings
from loadtests.machine import describe, one_line

ROOT = Path(__file__).resolve().parent.parent
TARGET_P95_MS = 25.0


def pct(values: list[float]) -> dict[str, float]:
    """p50/p95/p99/max of `values` (ms), rounded to 0.01."""
    if not values:
        return {}
    if len(values) == 1:
        return {k: round(values[0], 2) for k in ("p50", "p95", "p99", "max")}
    q = quantiles(values, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2),
            "max": round(max(values), 2)}  # fmt: skip


def bench_database() -> tuple[str, str, str]:
    """(libpq URL, maintenance database URL, name) of the scratch database."""
    base = get_settings().libpq_database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench_booking"
    return base.rsplit("/", 1)[0] + "/" + name, base.rsplit("/", 1)[0] + "/postgres", name


def recreate(url: str, admin: str, name: str) -> None:
    """Drop and create the scratch database, then migrate it."""
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)


def drop(admin: str, name: str) -> None:
    """Drop the scratch database."""
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seed(conn: psycopg.Connection[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Providers with slots, students and the contention class; returns their ids."""
    start = (datetime.now(UTC) + timedelta(days=7)).replace(minute=0, second=0, microsecond=0)
    providers = [uuid.uuid4() for _ in range(args.providers)]
    students = [uuid.uuid4() for _ in range(args.students)]
    users = [(p, f"tutor{i}@bench.example", "tutor") for i, p in enumerate(providers)]
    users += [(s, f"student{i}@bench.example", "student") for i, s in enumerate(students)]
    slots: list[uuid.UUID] = []
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY users (id, email, password_hash, full_name, role) FROM STDIN") as cp:
            for uid, email, role in users:
                cp.write_row((uid, email, "x", "Bench user", role))
        with cur.copy(
            "COPY provider_profiles (user_id, kind, display_name, subjects, languages,"
            " hourly_rate_minor, currency) FROM STDIN"
        ) as cp:
            for p in providers:
                cp.write_row((p, "tutor", "Bench tutor", ["mathematics"], ["fr"], 3000, "EUR"))
        with cur.copy(
            "COPY availability_slots (id, provider_id, starts_at, ends_at, mode, capacity)"
            " FROM STDIN"
        ) as cp:
            for p in providers:
                for k in range(args.slots):
                    sid = uuid.uuid4()
                    s = start + timedelta(hours=2 * k)
                    cp.write_row((sid, p, s, s + timedelta(hours=1), "online", args.capacity))
                    slots.append(sid)
        klass = uuid.uuid4()
        cur.execute(
            "INSERT INTO availability_slots (id, provider_id, starts_at, ends_at, mode, capacity)"
            " VALUES (%s, %s, %s, %s, 'online', %s)",
            (klass, providers[0], start - timedelta(hours=3), start - timedelta(hours=2),
             args.class_seats),
        )  # fmt: skip
    conn.execute("VACUUM ANALYZE")
    return {"slots": slots, "students": students, "class": klass}


def serve(url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    """The API (`api.server.serve`) on 127.0.0.1:`port` over the scratch database; returns
    once every worker answers."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    code = f"from api.server import serve; serve('127.0.0.1', {int(port)}, {int(workers)})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT)
    for _ in range(300):
        try:
            up = all(
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
                for _ in range(workers)
            )
        except httpx.HTTPError:
            up = False
        if up:
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the API did not start")


class Bookers:
    """Hands out (student token, slot) pairs: each student books once; slots in turn."""

    def __init__(self, students: list[uuid.UUID], slots: list[uuid.UUID]) -> None:
        self.students, self.slots, self.next = students, slots, 0

    def take(self, slot: uuid.UUID | None = None) -> tuple[str, uuid.UUID]:
        """The next unused student's token and a slot (`slot`, else the next in turn)."""
        if self.next >= len(self.students):
            raise SystemExit("out of students: raise --students")
        sid = self.students[self.next]
        chosen = slot or self.slots[self.next % len(self.slots)]
        self.next += 1
        return create_access_token(user_id=sid, role="student"), chosen


async def post(client: httpx.AsyncClient, token: str, slot: uuid.UUID) -> tuple[int, str]:
    """One hold; returns (status, problem code or ""), or (0, the transport error's name)
    when no answer came (connect or read timeout of an overloaded server)."""
    try:
        r = await client.post(
            "/api/v1/bookings",
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f'"{uuid.uuid4()}"'},
            json={"slot_id": str(slot)},
        )
    except httpx.TransportError as exc:
        return 0, type(exc).__name__
    code = r.json().get("code", "") if r.status_code >= 400 else ""
    return r.status_code, code


def cpu_ticks(server_pid: int) -> dict[str, int]:
    """CPU clock ticks so far of the API's process tree and of PostgreSQL (Linux /proc;
    empty elsewhere)."""
    out = {"api": 0, "postgres": 0}
    try:
        parents: dict[int, int] = {}
        ticks: dict[int, tuple[str, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                name, _, rest = stat.partition("(")[2].rpartition(")")
                fields = rest.split()
                parents[int(entry)] = int(fields[1])
                ticks[int(entry)] = (name, int(fields[11]) + int(fields[12]))
        for pid, (name, t) in ticks.items():
            if pid == server_pid or parents.get(pid) == server_pid:
                out["api"] += t
            elif name.startswith("postgres"):
                out["postgres"] += t
    except OSError:
        return {}
    return out


def cpu_us_per_request(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, int]:
    """µs of CPU per request between two `cpu_ticks` readings (PostgreSQL: every backend
    of the server, other users' included)."""
    hz = os.sysconf("SC_CLK_TCK")
    return {k: round((after[k] - before[k]) / hz * 1e6 / max(n, 1)) for k in before}


def _limits(n: int) -> httpx.Limits:
    return httpx.Limits(max_connections=n, max_keepalive_connections=n)


async def open_loop(base: str, bookers: Bookers, rate: float, seconds: float) -> dict[str, Any]:
    """`rate` holds/s for `seconds`, each sent at its scheduled instant; latency from that
    instant (no coordinated omission)."""
    n = int(rate * seconds)
    work = [bookers.take() for _ in range(n)]
    lat: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, limits=_limits(512), timeout=30) as client:
        await post(client, *bookers.take())  # warm one connection per... at least one
        t0 = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status, code = await post(client, *work[i])
            lat.append((time.perf_counter() - scheduled) * 1000)
            key = str(status) + (f" {code}" if code else "")
            statuses[key] = statuses.get(key, 0) + 1

        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"offered_per_s": rate, "seconds": seconds, "requests": n,
            "achieved_per_s": round(n / wall, 1), "latency_ms": pct(lat), "statuses": statuses,
            "target_p95_ms": TARGET_P95_MS,
            "target_met": bool(lat) and pct(lat)["p95"] <= TARGET_P95_MS}  # fmt: skip


async def closed_loop(base: str, bookers: Bookers, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` clients sending holds back to back for `seconds`."""
    lat: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, limits=_limits(clients), timeout=30) as client:
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()

        async def worker() -> None:
            while time.perf_counter() < deadline:
                token, slot = bookers.take()
                t = time.perf_counter()
                status, code = await post(client, token, slot)
                lat.append((time.perf_counter() - t) * 1000)
                key = str(status) + (f" {code}" if code else "")
                statuses[key] = statuses.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(lat),
            "throughput_per_s": round(len(lat) / wall, 1), "latency_ms": pct(lat),
            "statuses": statuses}  # fmt: skip


async def contention(base: str, bookers: Bookers, klass: uuid.UUID, n: int) -> dict[str, Any]:
    """`n` students at once on the class; every request its own connection."""
    work = [bookers.take(klass) for _ in range(n)]
    lat: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, limits=_limits(n), timeout=60) as client:
        start = asyncio.Event()

        async def one(token: str, slot: uuid.UUID) -> None:
            await start.wait()
            t = time.perf_counter()
            status, code = await post(client, token, slot)
            lat.append((time.perf_counter() - t) * 1000)
            key = str(status) + (f" {code}" if code else "")
            statuses[key] = statuses.get(key, 0) + 1

        tasks = [asyncio.create_task(one(*w)) for w in work]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
    return {"contenders": n, "latency_ms": pct(lat), "statuses": statuses}


def check_database(conn: psycopg.Connection[Any], klass: uuid.UUID) -> dict[str, Any]:
    """What the database says: the class's seats held, slots over capacity, counters that
    differ from their bookings."""
    held = conn.execute(
        "SELECT coalesce(sum(seats), 0) FROM bookings WHERE slot_id = %s"
        " AND status IN ('pending', 'confirmed')",
        (klass,),
    ).fetchone()
    over = conn.execute(
        "SELECT count(*) FROM availability_slots WHERE seats_taken > capacity"
    ).fetchone()
    drift = conn.execute(
        "SELECT count(*) FROM availability_slots s WHERE s.seats_taken <> (SELECT"
        " coalesce(sum(b.seats), 0) FROM bookings b WHERE b.slot_id = s.id AND b.status IN"
        " ('pending', 'confirmed', 'completed', 'no_show'))"
    ).fetchone()
    return {"class_seats_held": int(held[0]) if held else -1,
            "slots_over_capacity": int(over[0]) if over else -1,
            "counters_off": int(drift[0]) if drift else -1}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--providers", type=int, default=300)
    ap.add_argument("--slots", type=int, default=10, help="slots per provider")
    ap.add_argument("--capacity", type=int, default=4, help="seats per slot")
    ap.add_argument("--students", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=100.0, help="open loop: holds per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="open loop duration")
    ap.add_argument("--clients", type=int, default=32, help="closed loop: concurrent clients")
    ap.add_argument("--closed-seconds", type=float, default=15.0)
    ap.add_argument("--contenders", type=int, default=500)
    ap.add_argument("--class-seats", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--port", type=int, default=8140)
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-booking.json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--smoke", action="store_true", help="a tiny run (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.providers, args.slots, args.students = 5, 4, 400
        args.rate, args.seconds, args.clients, args.closed_seconds = 20.0, 2.0, 4, 1.0
        args.contenders, args.class_seats = 30, 5

    url, admin, name = bench_database()
    recreate(url, admin, name)
    report: dict[str, Any] = {"method": __doc__.split("Method. ", 1)[1].split("\n\n")[0]}
    proc = None
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            ids = seed(conn, args)
            report["machine"] = describe(conn)
            report["parameters"] = {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
            }
            proc = serve(url, args.port, args.workers)
            base = f"http://127.0.0.1:{args.port}"
            bookers = Bookers(ids["students"], ids["slots"])
            load = os.getloadavg()
            report["open_loop"] = asyncio.run(open_loop(base, bookers, args.rate, args.seconds))
            before = cpu_ticks(proc.pid)
            report["saturation"] = asyncio.run(
                closed_loop(base, bookers, args.clients, args.closed_seconds)
            )
            after = cpu_ticks(proc.pid)
            if before and after:
                report["saturation"]["cpu_us_per_request"] = cpu_us_per_request(
                    before, after, report["saturation"]["requests"]
                )
            report["contention"] = asyncio.run(
                contention(base, bookers, ids["class"], args.contenders)
            )
            report["loadavg_before"] = load
            report["database"] = check_database(conn, ids["class"])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep:
            drop(admin, name)

    fives = sum(
        n for phase in ("open_loop", "saturation", "contention")
        for k, n in report[phase]["statuses"].items() if k.startswith("5")
    )  # fmt: skip
    contention_ok = report["contention"]["statuses"].get("201", 0) == args.class_seats
    unanswered = sum(
        n for phase in ("open_loop", "saturation", "contention")
        for k, n in report[phase]["statuses"].items() if k.startswith("0")
    )  # fmt: skip
    report["unanswered"] = unanswered
    report["invariants"] = {
        "no_5xx": fives == 0,
        "contention_sold_exactly_the_seats": contention_ok
        and report["database"]["class_seats_held"] == args.class_seats,
        "contention_all_answered": not any(
            k.startswith("0") for k in report["contention"]["statuses"]
        ),
        "never_oversold": report["database"]["slots_over_capacity"] == 0,
        "counters_exact": report["database"]["counters_off"] == 0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")

    ol, sat, con = report["open_loop"], report["saturation"], report["contention"]
    print(f"machine: {one_line(report['machine'])}; load average before {load[0]:.2f}")
    print(f"method: {report['method']}")
    print(f"open loop {ol['offered_per_s']:.0f}/s for {ol['seconds']:.0f} s ({ol['requests']} holds,"
          f" achieved {ol['achieved_per_s']}/s): p50 {ol['latency_ms'].get('p50')} ms,"
          f" p95 {ol['latency_ms'].get('p95')} ms, p99 {ol['latency_ms'].get('p99')} ms"
          f" (target p95 <= {TARGET_P95_MS} ms: {'met' if ol['target_met'] else 'MISSED'});"
          f" statuses {ol['statuses']}")  # fmt: skip
    print(f"saturation, {sat['clients']} clients closed loop: {sat['throughput_per_s']} holds/s,"
          f" p50 {sat['latency_ms'].get('p50')} ms, p95 {sat['latency_ms'].get('p95')} ms;"
          f" CPU per hold (µs) {sat.get('cpu_us_per_request')}; statuses {sat['statuses']}")  # fmt: skip
    print(f"contention, {con['contenders']} at once on a {args.class_seats}-seat class:"
          f" statuses {con['statuses']}, p95 {con['latency_ms'].get('p95')} ms;"
          f" database {report['database']}")  # fmt: skip
    print(f"unanswered (transport errors, counted as status 0): {unanswered}")
    print(f"invariants {report['invariants']} -> {args.out}")
    return 0 if all(report["invariants"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
