"""CPU per booking hold in the API process (`python -m loadtests.bench_booking_cpu`).

Drives the ASGI app directly (no HTTP server, no client in the process: the figures are
the app's own CPU), one `POST /api/v1/bookings` with an Idempotency-Key at a time, each
by another student on the next of many slots, on a scratch database
(`<DATABASE_URL db>_bench_hold`, dropped at the end). Prints

- the process CPU per hold (`time.process_time`, no profiler attached) — PostgreSQL's
  own CPU is another process and is not included;
- with `--profile`, a py-spy sampling (`--gil`: only while this process runs Python) of
  one more series, attributed by component (FastAPI/pydantic, auth, idempotency, ORM,
  SQLAlchemy Core/engine, psycopg, JSON, middleware/logging/metrics) in µs per hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg

from core.security import create_access_token
from loadtests.attribution import print_attribution
from loadtests.bench_booking import drop, recreate
from loadtests.bench_search_cpu import _start_spy

# By the innermost frame of a sample that belongs to one of them (outermost first).
ANCHORS: list[tuple[str, str]] = [
    ("psycopg", "psycopg (protocol, adapt, rows)"),
    ("sqlalchemy/orm/", "SQLAlchemy ORM (session, unit of work, get)"),
    ("sqlalchemy/sql/", "SQLAlchemy Core (compile, cache keys)"),
    ("sqlalchemy/engine/", "SQLAlchemy engine (execute, results)"),
    ("sqlalchemy/pool/", "SQLAlchemy pool"),
    ("sqlalchemy/", "SQLAlchemy other (async bridge, events)"),
    ("jwt/", "auth (token, account)"),
    ("core/security.py", "auth (token, account)"),
    ("api/deps.py", "auth (token, account)"),
    ("core/idempotency.py", "idempotency"),
    ("api/idempotency.py", "idempotency"),
    ("booking/", "booking service"),
    ("orjson", "JSON"),
    ("json/", "JSON"),
    ("api/middleware.py", "middleware, access log, metrics"),
    ("structlog", "middleware, access log, metrics"),
    ("logging/", "middleware, access log, metrics"),
    ("prometheus_client", "middleware, access log, metrics"),
    ("pydantic", "FastAPI/pydantic (params, body, response model)"),
    ("fastapi", "FastAPI/pydantic (params, body, response model)"),
    ("starlette", "FastAPI/pydantic (params, body, response model)"),
    ("asyncio", "event loop"),
]


_OURS = ("(api/", "(booking/", "(core/", "(profiles/", "(credits/", "(payments/")


def component(stack: list[str]) -> str:
    """The component of one sampled stack (outermost frame first)."""
    for frame in reversed(stack):
        for anchor, name in ANCHORS:
            if anchor in frame:
                return name
    return "other"


def seed(url: str, n: int) -> list[tuple[str, str]]:
    """One tutor with `n` one-hour slots a week ahead and `n` students; (token, slot) pairs."""
    start = (datetime.now(UTC) + timedelta(days=7)).replace(minute=0, second=0, microsecond=0)
    tutor = uuid.uuid4()
    students = [uuid.uuid4() for _ in range(n)]
    slots = [uuid.uuid4() for _ in range(n)]
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY users (id, email, password_hash, full_name, role) FROM STDIN") as cp:
            cp.write_row((tutor, "tutor@bench.example", "x", "Bench tutor", "tutor"))
            for i, s in enumerate(students):
                cp.write_row((s, f"student{i}@bench.example", "x", "Bench user", "student"))
        cur.execute(
            "INSERT INTO provider_profiles (user_id, kind, display_name, subjects, languages,"
            " hourly_rate_minor, currency) VALUES (%s, 'tutor', 'Bench tutor',"
            " '{mathematics}', '{fr}', 3000, 'EUR')",
            (tutor,),
        )
        with cur.copy(
            "COPY availability_slots (id, provider_id, starts_at, ends_at, mode, capacity)"
            " FROM STDIN"
        ) as cp:
            for k, sid in enumerate(slots):
                s = start + timedelta(hours=2 * k)
                cp.write_row((sid, tutor, s, s + timedelta(hours=1), "online", 1))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return [
        (create_access_token(user_id=s, role="student"), str(slot))
        for s, slot in zip(students, slots, strict=True)
    ]


async def hold(app: Any, token: str, slot: str) -> int:
    """One hold through the ASGI app; its status."""
    body = orjson.dumps({"slot_id": slot, "seats": 1})
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/bookings", "raw_path": b"/api/v1/bookings",
        "query_string": b"", "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8765"), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
            (b"idempotency-key", f'"{uuid.uuid4()}"'.encode()),
        ],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8765),
    }  # fmt: skip
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def _report(out: str, cpu: float, top_n: int) -> None:
    share: dict[str, int] = defaultdict(int)
    top: dict[str, int] = defaultdict(int)
    ours: dict[str, int] = defaultdict(int)
    for line in Path(out).read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        stack = stack_text.split(";")
        if not any(f.startswith("hold (") for f in stack):
            continue  # not serving a request
        share[component(stack)] += int(n)
        top[stack[-1]] += int(n)
        mine = [f for f in stack if any(p in f for p in _OURS)]
        ours[mine[-1] if mine else "other"] += int(n)
    os.unlink(out)
    print_attribution("hold", cpu, share, top, top_n, width=48)
    total = sum(share.values()) or 1
    print("by the innermost frame of the project's code:")
    for frame, k in sorted(ours.items(), key=lambda kv: -kv[1])[:top_n]:
        print(f"  {k / total * cpu * 1e6:7.0f} µs  {frame}")


async def series(app: Any, pairs: list[tuple[str, str]]) -> float:
    """Hold every pair one at a time; the process CPU per hold (s)."""
    c = time.process_time()
    for token, slot in pairs:
        status = await hold(app, token, slot)
        assert status == 201, status
    return (time.process_time() - c) / len(pairs)


async def run(url: str, args: argparse.Namespace) -> None:
    from api.app import create_app

    pairs = seed(url.replace("+psycopg", ""), args.warmup + args.holds * (2 if args.profile else 1))
    app = create_app()
    async with app.router.lifespan_context(app):
        await series(app, pairs[: args.warmup])
        measured = pairs[args.warmup : args.warmup + args.holds]
        cpu = await series(app, measured)
        print(f"{len(measured)} holds, log level {args.log_level}")
        print(f"CPU per hold: {cpu * 1e6:8.0f} µs")
        if args.profile:
            with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
                out = f.name
            proc = _start_spy(out)
            if proc is None:
                return
            await asyncio.sleep(1.0)  # attached
            cpu = await series(app, pairs[args.warmup + args.holds :])
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 30)
            _report(out, cpu, args.top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--holds", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--profile", action="store_true", help="also attribute CPU with py-spy")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    os.environ["LOG_LEVEL"] = args.log_level
    from core.settings import get_settings

    base = get_settings().database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench_hold"
    url = base.rsplit("/", 1)[0] + "/" + name
    libpq = url.replace("+psycopg", "")
    admin = libpq.rsplit("/", 1)[0] + "/postgres"
    recreate(libpq, admin, name)
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        asyncio.run(run(url, args))
    finally:
        drop(admin, name)


if __name__ == "__main__":
    main()
