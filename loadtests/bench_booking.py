"""Booking benchmark: hold latency open loop, saturation throughput, and a contention run.

Usage: `python -m loadtests.bench_booking [--rate 100 --seconds 30 ...]` (`make
bench-booking`); `--smoke` runs a tiny version (the test suite's check of its invariants).

Method. A scratch database (`<DATABASE_URL's name>_bench_booking`, dropped and re-created,
migrated) is seeded directly in SQL: `--providers` tutors with `--slots` slots each of
`--capacity` seats a week ahead, `--students` students, and one `--class-seats`-seat group
class. The API runs as its own processes (`educonnect serve`: uvicorn, `--workers`
workers) on 127.0.0.1:`--port`; the load comes from separate generator processes
(`loadtests.holdgen`: a lean HTTP/1.1 keep-alive client on asyncio), never from the API's
processes nor from this measuring one. Every request is `POST /api/v1/bookings` with a
bearer token and a fresh `Idempotency-Key`, each from a student that books only once (so
no 409 `overlapping_booking`); a 201 is a hold taken. CPU per hold is read from /proc
(schedstat) apart for the API's processes, for the PostgreSQL backends of the bench
database and for the generators.

0. Round trips: `--round-trips` holds one after another on a one-worker API (on a free
   port of its own) whose database connections pass through a relay counting the
   client's turns on the wire (`loadtests.roundtrips`): statements, BEGIN/COMMIT, pings,
   a pipeline = one.
1. Open loop: `--rate` requests/s for `--seconds` from `--generators` processes sharing
   one fixed schedule: each request is sent at its scheduled instant whatever the answers
   so far, and its latency runs from that instant to the response, so a stall (of the
   API or of the generator) delays the requests behind it and shows in the figures
   (coordinated omission corrected). The achieved send and completion rates are printed
   beside the offered one. Target: p95 ≤ 25 ms at 100 requests/s.
2. Saturation: `--clients` clients in a closed loop (send, wait, send) for
   `--closed-seconds`: the throughput the stack sustains, and its latencies.
3. Contention: `--contenders` students at once on the `--class-seats`-seat class, each on
   its own connection: exactly that many seats held, the others 409 `sold_out`, no 5xx;
   p95 of those requests.

Then the database is checked: no slot holds more seats than its capacity and every
counter equals the seats of its seat-holding bookings. Exits non-zero when an invariant
fails (not when a latency target is missed: figures on a shared machine are rough).
Writes `artifacts/bench-booking.json` (or `--out`) with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import quantiles
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.security import create_access_token
from core.settings import get_settings
from loadtests.machine import describe, one_line
from loadtests.roundtrips import TurnCounter
from loadtests.stack import free_port

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
    """The API (`educonnect serve`) on 127.0.0.1:`port` over the scratch database; returns
    once every worker answers."""
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, cwd=ROOT,
    )  # fmt: skip
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

    def take(self, slot: uuid.UUID | None = None) -> list[str]:
        """The next unused student's token and a slot (`slot`, else the next in turn)."""
        if self.next >= len(self.students):
            raise SystemExit("out of students: raise --students")
        sid = self.students[self.next]
        chosen = slot or self.slots[self.next % len(self.slots)]
        self.next += 1
        return [create_access_token(user_id=sid, role="student"), str(chosen)]


def generate(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one `loadtests.holdgen` process per job, all at once; their results."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, job in enumerate(jobs):
            path = Path(tmp) / f"job{i}.json"
            path.write_text(json.dumps(job))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "loadtests.holdgen", str(path)],
                cwd=ROOT, stdout=subprocess.PIPE,
            ))  # fmt: skip
        outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a load generator failed")
    return [json.loads(o) for o in outs]


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The generators' results as one: latencies, statuses, send span, client CPU."""
    lat = [x for r in results for x in r["latency_ms"]]
    statuses: dict[str, int] = {}
    for r in results:
        for k, n in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + n
    firsts = [r["first_send"] for r in results if r["first_send"]]
    return {
        "latency_ms": lat, "statuses": statuses, "sent": sum(r["sent"] for r in results),
        "first_send": min(firsts, default=0.0),
        "last_send": max(r["last_send"] for r in results),
        "last_done": max(r["last_done"] for r in results),
        "send_lag_ms": [x for r in results for x in r["send_lag_ms"]],
        "client_cpu_s": round(sum(r["cpu_s"] for r in results), 3),
    }  # fmt: skip


def _cpu_ns(pid: int) -> int | None:
    """CPU time (ns) of a process so far: /proc/<pid>/schedstat, else its stat ticks."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _tree(root: int) -> list[int]:
    """`root` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        tree += frontier
    return tree


class CpuMeter:
    """CPU of the API's processes (the server and its workers) and of the PostgreSQL
    backends connected to the bench database (other databases' backends, and the
    server's shared background processes, are not counted)."""

    def __init__(self, server_pid: int, conn: psycopg.Connection[Any], dbname: str) -> None:
        self.server_pid, self.conn, self.dbname = server_pid, conn, dbname

    def read(self) -> dict[str, dict[int, int]]:
        """CPU ns so far per pid, by side (`api`, `postgres`)."""
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.dbname,),
        ).fetchall()
        out: dict[str, dict[int, int]] = {"api": {}, "postgres": {}}
        for side, pids in (("api", _tree(self.server_pid)), ("postgres", [r[0] for r in rows])):
            for pid in pids:
                ns = _cpu_ns(pid)
                if ns is not None:
                    out[side][pid] = ns
        return out

    @staticmethod
    def per_request_us(
        before: dict[str, dict[int, int]], after: dict[str, dict[int, int]], n: int
    ) -> dict[str, float]:
        """µs of CPU per request, by side, between two readings (a process that appeared
        in between counts from zero)."""
        return {
            side: round(sum(ns - before[side].get(pid, 0) for pid, ns in after[side].items())
                        / 1000 / max(n, 1), 1)
            for side in after
        }  # fmt: skip


def _phase(merged: dict[str, Any]) -> dict[str, Any]:
    return {"requests": len(merged["latency_ms"]), "latency_ms": pct(merged["latency_ms"]),
            "statuses": merged["statuses"]}  # fmt: skip


def open_loop(
    port: int, bookers: Bookers, rate: float, seconds: float, processes: int, meter: CpuMeter
) -> dict[str, Any]:
    """`rate` holds/s for `seconds` from `processes` generator processes sharing one
    schedule; latency from each request's scheduled instant (coordinated omission
    corrected); achieved send and completion rates; CPU per hold by side."""
    n = int(rate * seconds)
    work = [bookers.take() for _ in range(n)]
    start = time.monotonic() + 1.0 + 0.2 * processes  # after the generators connected
    jobs = [
        {"mode": "open", "host": "127.0.0.1", "port": port, "items": work[j::processes],
         "rate": rate / processes, "start": start, "phase": j / rate, "connections": 8}
        for j in range(processes)
    ]  # fmt: skip
    before = meter.read()
    merged = merge(generate(jobs))
    after = meter.read()
    sent, span = merged["sent"], merged["last_send"] - merged["first_send"]
    out = {"offered_per_s": rate, "seconds": seconds, "generators": processes, **_phase(merged),
           "sent_per_s": round((sent - 1) / span, 1) if span > 0 else None,
           "completed_per_s": round(sent / (merged["last_done"] - start), 1)
           if merged["last_done"] > start else None,
           "send_lag_ms": pct(merged["send_lag_ms"]),
           "target_p95_ms": TARGET_P95_MS}  # fmt: skip
    out["target_met"] = bool(merged["latency_ms"]) and out["latency_ms"]["p95"] <= TARGET_P95_MS
    out["cpu_us_per_request"] = {
        **CpuMeter.per_request_us(before, after, out["requests"]),
        "client": round(merged["client_cpu_s"] * 1e6 / max(out["requests"], 1), 1),
    }
    return out


def closed_loop(
    port: int, bookers: Bookers, clients: int, seconds: float, meter: CpuMeter, reserve: int
) -> dict[str, Any]:
    """`clients` connections sending holds back to back for `seconds` (one generator
    process; students beyond `reserve` are its to use); the throughput, latencies and CPU
    per hold by side."""
    spare = len(bookers.students) - bookers.next - reserve
    work = [bookers.take() for _ in range(max(min(int(seconds * 800), spare), clients))]
    job = {"mode": "closed", "host": "127.0.0.1", "port": port, "items": work,
           "clients": clients, "seconds": seconds}  # fmt: skip
    before = meter.read()
    merged = merge(generate([job]))
    after = meter.read()
    # the students not sent are free again (a client may have drawn one at the deadline)
    bookers.next -= max(len(work) - merged["sent"] - clients, 0)
    wall = merged["last_done"] - merged["first_send"]
    out = {"clients": clients, "seconds": round(wall, 2), **_phase(merged),
           "throughput_per_s": round(len(merged["latency_ms"]) / wall, 1) if wall > 0 else 0}  # fmt: skip
    out["cpu_us_per_request"] = {
        **CpuMeter.per_request_us(before, after, out["requests"]),
        "client": round(merged["client_cpu_s"] * 1e6 / max(out["requests"], 1), 1),
    }
    return out


def contention(port: int, bookers: Bookers, klass: uuid.UUID, n: int) -> dict[str, Any]:
    """`n` students at once on the class, each on its own connection (one generator)."""
    job = {"mode": "burst", "host": "127.0.0.1", "port": port,
           "items": [bookers.take(klass) for _ in range(n)]}  # fmt: skip
    return {"contenders": n, **_phase(merge(generate([job])))}


def round_trips(url: str, port: int, bookers: Bookers, n: int) -> dict[str, Any]:
    """Database round trips per hold: a one-worker API whose database connections pass
    through a counting relay (`loadtests.roundtrips`), `n` holds one after another after
    a warm-up."""
    parts = urlsplit(url)
    relay = TurnCounter(parts.hostname or "127.0.0.1", parts.port or 5432)
    relay.start()
    netloc = parts.netloc.rsplit("@", 1)
    via = urlunsplit(parts._replace(netloc=(netloc[0] + "@" if len(netloc) == 2 else "")
                                    + f"127.0.0.1:{relay.port}"))  # fmt: skip
    proc = serve(via, port, 1)
    try:
        job = {"mode": "closed", "host": "127.0.0.1", "port": port, "clients": 1,
               "seconds": 600}  # fmt: skip
        generate([{**job, "items": [bookers.take() for _ in range(5)]}])
        before = relay.turns
        statuses = merge(generate([{**job, "items": [bookers.take() for _ in range(n)]}]))
        turns = relay.turns - before
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        relay.stop()
    return {"holds": n, "per_hold": round(turns / max(n, 1), 2),
            "statuses": statuses["statuses"]}  # fmt: skip


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
    ap.add_argument("--generators", type=int, default=1, help="open loop: generator processes")
    ap.add_argument("--clients", type=int, default=32, help="closed loop: concurrent clients")
    ap.add_argument("--closed-seconds", type=float, default=15.0)
    ap.add_argument("--contenders", type=int, default=500)
    ap.add_argument("--class-seats", type=int, default=20)
    ap.add_argument("--round-trips", type=int, default=50,
                    help="holds sent through the counting relay (0: skip)")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--port", type=int, default=8140, help="the API's port")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench-booking.json")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--smoke", action="store_true", help="a tiny run (tests)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.providers, args.slots, args.students = 5, 4, 400
        args.rate, args.seconds, args.clients, args.closed_seconds = 20.0, 2.0, 4, 1.0
        args.contenders, args.class_seats, args.round_trips = 30, 5, 5

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
            bookers = Bookers(ids["students"], ids["slots"])
            if args.round_trips:
                report["round_trips"] = round_trips(url, free_port(), bookers, args.round_trips)
            proc = serve(url, args.port, args.workers)
            meter = CpuMeter(proc.pid, conn, name)
            generate([{"mode": "closed", "host": "127.0.0.1", "port": args.port,  # warm-up
                       "clients": args.workers * 2, "seconds": 60,
                       "items": [bookers.take() for _ in range(args.workers * 8)]}])  # fmt: skip
            load = os.getloadavg()
            report["open_loop"] = open_loop(
                args.port, bookers, args.rate, args.seconds, args.generators, meter
            )
            report["saturation"] = closed_loop(
                args.port, bookers, args.clients, args.closed_seconds, meter, args.contenders
            )
            report["contention"] = contention(args.port, bookers, ids["class"], args.contenders)
            report["loadavg_before"] = load
            report["database"] = check_database(conn, ids["class"])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        if not args.keep:
            drop(admin, name)

    phases = ("open_loop", "saturation", "contention")
    fives = sum(
        n for phase in phases for k, n in report[phase]["statuses"].items() if k.startswith("5")
    )
    contention_ok = report["contention"]["statuses"].get("201", 0) == args.class_seats
    unanswered = sum(
        n for phase in phases for k, n in report[phase]["statuses"].items() if k.startswith("0")
    )
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
    if "round_trips" in report:
        rt = report["round_trips"]
        print(f"database round trips per hold: {rt['per_hold']} (over {rt['holds']} holds,"
              f" one at a time; statuses {rt['statuses']})")  # fmt: skip
    print(f"open loop offered {ol['offered_per_s']:.0f}/s for {ol['seconds']:.0f} s"
          f" ({ol['requests']} holds, {ol['generators']} generator process(es)): sent"
          f" {ol['sent_per_s']}/s, completed {ol['completed_per_s']}/s (send lag p99"
          f" {ol['send_lag_ms'].get('p99')} ms); latency from the scheduled send: p50"
          f" {ol['latency_ms'].get('p50')} ms, p95 {ol['latency_ms'].get('p95')} ms,"
          f" p99 {ol['latency_ms'].get('p99')} ms (target p95 <= {TARGET_P95_MS} ms:"
          f" {'met' if ol['target_met'] else 'MISSED'}); CPU per hold (µs)"
          f" {ol['cpu_us_per_request']}; statuses {ol['statuses']}")  # fmt: skip
    print(f"saturation, {sat['clients']} clients closed loop: {sat['throughput_per_s']} holds/s,"
          f" p50 {sat['latency_ms'].get('p50')} ms, p95 {sat['latency_ms'].get('p95')} ms;"
          f" CPU per hold (µs) {sat['cpu_us_per_request']}; statuses {sat['statuses']}")  # fmt: skip
    print(f"contention, {con['contenders']} at once on a {args.class_seats}-seat class:"
          f" statuses {con['statuses']}, p95 {con['latency_ms'].get('p95')} ms;"
          f" database {report['database']}")  # fmt: skip
    print(f"unanswered (transport errors, counted as status 0): {unanswered}")
    print(f"invariants {report['invariants']} -> {args.out}")
    return 0 if all(report["invariants"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
