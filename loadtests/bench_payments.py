"""Payments benchmark: webhook ingest, commit-to-confirmed, payment-intent creation.

Usage: `python -m loadtests.bench_payments [--events 20000 --payments 1000 --rate 100
--intents 1000]` (`make bench-payments`). In a scratch database (migrated; dropped at the
end unless `--keep`), with the Stripe stand-in (`python -m standins.stripe`), the API
(`educonnect serve`, `--api-workers` processes) and a Celery worker (prefork,
`--worker-concurrency`) as subprocesses of their own, on `REDIS_URL`:

1. Webhook ingest: `--events` distinct events, signed beforehand with the `stripe` library,
   POSTed to `/api/v1/payments/webhooks/stripe` by wrk (its own process; `--concurrency`
   connections, closed loop) as fast as the API takes them (verified, stored once, a drain
   queued; no worker running, the queue is emptied afterwards). Reports verified events
   stored per second and latency.
2. Commit-to-confirmed: `--payments` pending bookings with their intents; at `--rate` per
   second (open loop) the stand-in is told to make an intent succeed (the instant Stripe
   commits it: the send of that request is the start) and delivers the signed webhook; the
   worker's drain re-reads the intent and confirms. A poller (5 ms) sees each payment's
   `succeeded` commit. Reports p50/p95/p99/max, and where the time went per payment
   (`stages_ms`, from the database's own timestamps on the same clock): commit → webhook
   stored (`webhook_events.received_at`: the stand-in's delivery and the API), stored →
   processed (`processed_at`, stamped in the confirming transaction after the intent's
   re-read: the drain's claim and the re-read), processed → seen (that transaction's
   statements and commit, and the poller); `succeed_call_ms` is how long after its
   scheduled instant each "succeed" call to the stand-in returned (a slow stand-in makes
   the generator late, which counts in commit-to-confirmed). `--standin-latency-ms` adds
   that much to every Stripe API answer of this phase (Stripe's network and server time;
   the stand-in answers locally in under a millisecond).
3. Payment-intent creation: `--intents` pending bookings, `POST
   /bookings/{id}/payment-intent` at `--rate` per second, open loop, each latency measured
   from its scheduled send time (a late send counts). Reports the API's p50/p95/p99, the
   stand-in's own server time per call (p50/p95, from its `/_standin/stats`) and the API's
   p95 less the stand-in's p95 (the stand-in excluded).

Every phase also reports the CPU time (user + system, from /proc through psutil) each
process group spent per unit of work — `api` (the uvicorn processes), `worker` (the Celery
processes), `postgres` (the backends of the scratch database, the benchmark's own
connections excluded), `standin`, and `client` (wrk, or this process's generator) — so the
server's cost is read apart from the load generator's, and robustly on a busy machine.

Writes `artifacts/bench-payments.json` with the machine described.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from statistics import quantiles
from typing import Any

import httpx
import psutil
import psycopg
import redis
import stripe
from psycopg import sql

from core.migrate import upgrade
from core.security import create_access_token
from core.settings import get_settings
from loadtests.machine import describe, one_line
from loadtests.stack import free_port
from payments.tasks import DRAIN_FLAG

API_KEY = "sk_test_bench"
SECRET = "whsec_bench"  # noqa: S105 - the benchmark's stand-in secret
WEBHOOK = "/api/v1/payments/webhooks/stripe"


def _pct(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return {"p50": v, "p95": v, "p99": v, "max": v, "n": len(values)}
    q = quantiles(values, n=100, method="inclusive")
    return {
        "p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2),
        "max": round(max(values), 2), "n": len(values),
    }  # fmt: skip


def _wait(predicate: Any, what: str, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


BENCH_APP = "bench_payments"  # application_name of this script's own connections


def _tree_cpu_s(proc: Any) -> float:
    """CPU seconds (user + system) of a process and its live descendants."""
    total = 0.0
    try:
        procs = [psutil.Process(proc.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _postgres_cpu_s(conn: psycopg.Connection[Any], dbname: str) -> dict[int, float]:
    """CPU seconds of each server backend (by pid) connected to `dbname`, except this
    script's own connections."""
    out: dict[int, float] = {}
    for (pid,) in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
        (dbname, BENCH_APP),
    ):
        try:
            t = psutil.Process(int(pid)).cpu_times()
            out[int(pid)] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


class Cpu:
    """CPU seconds per process group between `start()` and `per_unit()`. PostgreSQL counts
    per backend: a backend that started meanwhile counts whole, one that exited is lost
    (pooled connections live for the run)."""

    def __init__(self, groups: dict[str, Any], conn: psycopg.Connection[Any], dbname: str):
        self.groups, self.conn, self.dbname = groups, conn, dbname
        self.t0: dict[str, float] = {}
        self.pg0: dict[int, float] = {}

    def _now(self) -> dict[str, float]:
        out = {name: _tree_cpu_s(p) for name, p in self.groups.items() if p is not None}
        me = psutil.Process().cpu_times()
        out["client"] = me.user + me.system
        return out

    def start(self) -> None:
        """Take the starting counters."""
        self.t0 = self._now()
        self.pg0 = _postgres_cpu_s(self.conn, self.dbname)

    def per_unit(self, units: int, extra_client_s: float = 0.0) -> dict[str, float]:
        """Milliseconds of CPU per unit of work of each group since `start()`
        (`extra_client_s`: a client process's own CPU, e.g. wrk's)."""
        t1 = self._now()
        t1["client"] += extra_client_s
        pg1 = _postgres_cpu_s(self.conn, self.dbname)
        out = {k: (t1[k] - self.t0.get(k, 0.0)) for k in t1}
        out["postgres"] = sum(max(0.0, v - self.pg0.get(pid, 0.0)) for pid, v in pg1.items())
        return {k: round(v * 1000 / max(1, units), 3) for k, v in out.items()}


class Procs:
    """The API and worker subprocesses of the run."""

    def __init__(self) -> None:
        import subprocess

        self.subprocess = subprocess
        self.procs: list[Any] = []

    def spawn(self, args: list[str], env: dict[str, str]) -> Any:
        """Start a subprocess; its output goes to `$BENCH_PAYMENTS_LOGS/<n>.log` when set."""
        logs = os.environ.get("BENCH_PAYMENTS_LOGS")
        out: Any = self.subprocess.DEVNULL
        if logs:
            Path(logs).mkdir(parents=True, exist_ok=True)
            out = open(Path(logs) / f"{len(self.procs)}.log", "w")  # noqa: SIM115
        p = self.subprocess.Popen(
            args, env={**os.environ, **env}, stdout=out, stderr=self.subprocess.STDOUT
        )
        self.procs.append(p)
        return p

    def stop(self, p: Any) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=30)
            except self.subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=30)

    def stop_all(self) -> None:
        for p in self.procs:
            self.stop(p)


_WRK_LUA = """
local events = {%s}
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local i = -1
request = function()
  -- thread k sends events k, k + 2, k + 4, ... (distinct across the two threads)
  i = i + 1
  local e = events[(((tid or 0) + 2 * i) %% #events) + 1]
  return wrk.format("POST", "%s", {["Stripe-Signature"] = e[1],
    ["Content-Type"] = "application/json"}, e[2])
end
done = function(summary, latency, requests)
  io.write(string.format("WRKJSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"errors\\": %%d,"
    .. " \\"p50\\": %%f, \\"p95\\": %%f, \\"p99\\": %%f}\\n",
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000))
end
"""


def _wrk_ingest(
    wrk: str, base: str, events: list[tuple[str, str]], clients: int, seconds: float
) -> dict[str, Any]:
    """POST the signed events with wrk (2 threads, `clients` connections, closed loop,
    in its own process: the client costs little of the two cores)."""
    import subprocess
    import tempfile

    rows = ", ".join(f"{{{json.dumps(sig)}, {json.dumps(body)}}}" for sig, body in events)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_LUA % (rows, WEBHOOK))
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            [wrk, "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", f.name, base],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
    r["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return r


def _market(conn: psycopg.Connection[Any], n: int) -> list[tuple[str, str]]:
    """A tutor with `n` one-hour slots (capacity 1, from tomorrow), one student per slot
    and a pending hold on each. Returns (booking_id, student_id) pairs."""
    tutor = conn.execute(
        "INSERT INTO users (email, password_hash, role) VALUES (%s, 'x', 'tutor') RETURNING id",
        (f"bench-tutor-{uuid.uuid4().hex[:8]}@example.com",),
    ).fetchone()[0]  # type: ignore[index]
    conn.execute(
        "INSERT INTO provider_profiles (user_id, kind, display_name, languages,"
        " hourly_rate_minor, currency) VALUES (%s, 'tutor', 'Bench', '{fr}', 3000, 'EUR')",
        (tutor,),
    )
    rows = conn.execute(
        """
        WITH s AS (
            INSERT INTO users (email, password_hash, role)
            SELECT 'bench-' || g || '-' || %(tag)s || '@example.com', 'x', 'student'
            FROM generate_series(1, %(n)s) g RETURNING id
        ), n AS (SELECT id, row_number() OVER () AS k FROM s),
        sl AS (
            INSERT INTO availability_slots (provider_id, starts_at, ends_at, mode, capacity)
            SELECT %(tutor)s, date_trunc('hour', now()) + (k + 24) * interval '1 hour',
                   date_trunc('hour', now()) + (k + 25) * interval '1 hour', 'online', 1
            FROM n RETURNING id, starts_at, ends_at
        ), sln AS (SELECT *, row_number() OVER (ORDER BY starts_at) AS k FROM sl)
        INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats, starts_at,
            ends_at, status, hold_expires_at, price_minor, currency, cancel_policy)
        SELECT n.id, n.id, %(tutor)s, sln.id, 1, sln.starts_at, sln.ends_at, 'pending',
               now() + interval '1 hour', 3000, 'EUR',
               '{"source": "platform", "tiers": [{"min_hours_before": 24, "refund_percent": 100}]}'
        FROM n JOIN sln USING (k) RETURNING id, student_id
        """,
        {"n": n, "tutor": tutor, "tag": uuid.uuid4().hex[:8]},
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


async def _post_all(
    url: str,
    jobs: list[tuple[str, dict[str, str], bytes | None]],
    *,
    rate: float | None,
    concurrency: int,
) -> tuple[list[float], int, float]:
    """POST every (path, headers, body): open loop at `rate`/s — request i is due at
    `i / rate` s and its latency counts from then, so a late send or a wait for a connection
    is latency too — else closed loop, as fast as `concurrency` connections go. Returns
    latencies (ms), errors, wall seconds."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    # aiohttp: less client CPU per request than httpx's async client, so the generator, which
    # shares the cores with the servers, stays small (its CPU is reported as `client`)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as client:
        sem = asyncio.Semaphore(concurrency)
        t0 = time.perf_counter()

        async def post(path: str, headers: dict[str, str], body: bytes | None) -> int:
            async with client.post(path, headers=headers, data=body) as r:
                await r.read()
                return r.status

        async def one(i: int, path: str, headers: dict[str, str], body: bytes | None) -> None:
            nonlocal errors
            if rate:
                due = t0 + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                status = await post(path, headers, body)
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                async with sem:
                    s = time.perf_counter()
                    status = await post(path, headers, body)
                    latencies.append((time.perf_counter() - s) * 1000)
            if status >= 300:
                errors += 1

        await asyncio.gather(*(one(i, *job) for i, job in enumerate(jobs)))
        return latencies, errors, time.perf_counter() - t0


def _stages(
    conn: psycopg.Connection[Any],
    committed: dict[str, float],
    seen: dict[str, float],
    wall0: float,
) -> dict[str, dict[str, float]]:
    """Per payment, from its first stored event: commit → stored (`received_at`), stored
    → processed (`processed_at`), processed → seen by the poller; percentiles in ms
    (`committed`/`seen`: perf_counter instants by booking id; `wall0`: wall clock less
    perf_counter)."""
    stored: list[float] = []
    processed: list[float] = []
    visible: list[float] = []
    for bid, received, done in conn.execute(
        "SELECT DISTINCT ON (p.booking_id) p.booking_id::text, extract(epoch FROM"
        " w.received_at)::float8, extract(epoch FROM w.processed_at)::float8"
        " FROM payments p JOIN webhook_events w ON w.object_ref = p.gateway_ref"
        " ORDER BY p.booking_id, w.received_at"
    ):
        if bid not in committed:
            continue
        start = wall0 + committed[bid]
        stored.append((received - start) * 1000)
        if done is not None:
            processed.append((done - received) * 1000)
            if bid in seen:
                visible.append((wall0 + seen[bid] - done) * 1000)
    return {
        "commit_to_stored": _pct(stored),
        "stored_to_processed": _pct(processed),
        "processed_to_seen": _pct(visible),
    }


class Standin:
    """The Stripe stand-in as a subprocess, driven through its test helpers over HTTP."""

    def __init__(self, procs: Procs, env: dict[str, str]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = procs.spawn(
            [sys.executable, "-m", "standins.stripe", "--port", str(port), "--api-key", API_KEY,
             "--webhook-secret", SECRET, "--webhook-url", ""], env,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=30)
        _wait(self._up, "the Stripe stand-in")

    def _up(self) -> bool:
        try:
            return self.http.get("/_standin/health").status_code == 200
        except httpx.HTTPError:
            return False

    def config(self, **values: str) -> None:
        """`POST /_standin/config` (webhook_url, deliver, …)."""
        self.http.post("/_standin/config", data=values).raise_for_status()

    def succeed(self, intent_id: str) -> None:
        """Make the intent succeed now (its events are delivered when a URL is set)."""
        self.http.post(f"/_standin/payment_intents/{intent_id}/succeed").raise_for_status()

    def stats(self, *, reset: bool = False) -> dict[str, Any]:
        """Requests served and the server-side time percentiles (ms); `reset` starts over."""
        r = self.http.post("/_standin/stats/reset") if reset else self.http.get("/_standin/stats")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=20000, help="signed events available")
    ap.add_argument(
        "--ingest-client", choices=("wrk", "aiohttp", "httpx"), default="wrk",
        help="wrk, else this process's aiohttp generator (`httpx`: the same, kept as an alias)",
    )  # fmt: skip
    ap.add_argument("--ingest-seconds", type=float, default=8.0, help="wrk's duration")
    ap.add_argument("--payments", type=int, default=1000)
    ap.add_argument("--intents", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0, help="payments or intents per second")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--api-workers", type=int, default=2)
    ap.add_argument("--worker-concurrency", type=int, default=2)
    ap.add_argument(
        "--standin-latency-ms", type=float, default=0.0,
        help="added to each Stripe API answer during commit-to-confirmed (Stripe's RTT)",
    )  # fmt: skip
    ap.add_argument("--out", default="artifacts/bench-payments.json")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    base = get_settings().libpq_database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench_payments"
    url = base.rsplit("/", 1)[0] + "/" + name
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)

    redis_url = get_settings().redis_url
    env = {
        "DATABASE_URL": url, "REDIS_URL": redis_url, "STRIPE_SECRET_KEY": "",
        "STRIPE_STANDIN_API_KEY": API_KEY, "STRIPE_WEBHOOK_SECRET": SECRET,
        "LOG_LEVEL": "WARNING", "WORKER_METRICS_PORT": "0",
        "SECRET_KEY": get_settings().secret_key,
    }  # fmt: skip
    procs = Procs()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"args": vars(args)}
    try:
        standin = Standin(procs, env)
        env["STRIPE_STANDIN_URL"] = standin.url
        api = procs.spawn(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(args.api_workers)], env,
        )  # fmt: skip

        def api_up() -> bool:
            try:
                return httpx.get(api_url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(api_up, "the API")
        with psycopg.connect(url, autocommit=True, application_name=BENCH_APP) as conn:
            report["machine"] = describe(conn)
            print("machine:", one_line(report["machine"]), flush=True)
            groups: dict[str, Any] = {"api": api, "worker": None, "standin": standin.proc}
            cpu = Cpu(groups, conn, name)

            # 1. webhook ingest -------------------------------------------------------
            events: list[tuple[str, str]] = []
            for _ in range(args.events):
                body = json.dumps({
                    "id": "evt_" + uuid.uuid4().hex, "object": "event",
                    "type": "payment_intent.succeeded", "created": int(time.time()),
                    "data": {"object": {"id": "pi_" + uuid.uuid4().hex, "object": "payment_intent"}},
                })  # fmt: skip
                events.append(
                    (stripe.WebhookSignature.generate_signature_header(body, SECRET), body)
                )
            wrk = shutil.which("wrk") if args.ingest_client == "wrk" else None
            cpu.start()
            if wrk:
                r = _wrk_ingest(wrk, api_url, events, args.concurrency, args.ingest_seconds)
                wall, errors, sent = r["seconds"], r["errors"], r["requests"]
                lat = {
                    "p50": round(r["p50"], 2),
                    "p95": round(r["p95"], 2),
                    "p99": round(r["p99"], 2),
                }
                client = f"wrk -t2 -c{args.concurrency} -d{args.ingest_seconds}s (closed loop)"
                wrk_cpu_s = float(r["cpu_s"])
            else:
                jobs = [
                    (
                        WEBHOOK,
                        {"Stripe-Signature": sig, "Content-Type": "application/json"},
                        body.encode(),
                    )
                    for sig, body in events
                ]
                latencies, errors, wall = asyncio.run(
                    _post_all(api_url, jobs, rate=None, concurrency=args.concurrency)
                )
                sent, lat = len(jobs), _pct(latencies)
                client = f"aiohttp, {args.concurrency} connections (closed loop, in this process)"
                wrk_cpu_s = 0.0
            stored = conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0]  # type: ignore[index]
            report["ingest"] = {
                "events_signed": args.events, "requests": sent, "stored": stored,
                "errors": errors, "seconds": round(wall, 2),
                "stored_per_s": round(stored / wall, 1), "latency_ms": lat, "client": client,
                "cpu_ms_per_event": cpu.per_unit(sent, wrk_cpu_s),
            }  # fmt: skip
            print("ingest:", report["ingest"], flush=True)
            # drop part 1's queued drain and its flag (no worker was running)
            redis.Redis.from_url(redis_url).delete("celery", DRAIN_FLAG)
            conn.execute("TRUNCATE webhook_events")

            # 2. commit-to-confirmed ------------------------------------------------------
            groups["worker"] = procs.spawn(
                [sys.executable, "-m", "celery", "-A", "core.celery_app", "worker",
                 "--pool=prefork", f"--concurrency={args.worker_concurrency}",
                 "--without-gossip", "--without-mingle", "--loglevel=WARNING",
                 "-n", f"bench-{uuid.uuid4().hex[:6]}@localhost"], env,
            )  # fmt: skip
            from core.celery_app import app as celery

            _wait(lambda: bool(celery.control.ping(timeout=0.5)), "the worker")
            pairs = _market(conn, args.payments)
            sdk = stripe.StripeClient(API_KEY, base_addresses={"api": standin.url})
            refs: dict[str, str] = {}
            for booking_id, _student in pairs:
                pi = sdk.v1.payment_intents.create(
                    {"amount": 3000, "currency": "eur", "metadata": {"booking_id": booking_id}},
                    {"idempotency_key": f"pi:{booking_id}"},
                )
                refs[booking_id] = pi.id
                conn.execute(
                    "INSERT INTO payments (booking_id, payer_id, provider_id, gateway,"
                    " gateway_ref, price_minor, amount_minor, currency)"
                    " SELECT id, student_id, provider_id, 'stripe', %s, 3000, 3000, 'EUR'"
                    " FROM bookings WHERE id = %s",
                    (pi.id, booking_id),
                )
            standin.config(
                webhook_url=api_url + WEBHOOK, deliver="true",
                latency_ms=str(args.standin_latency_ms),
            )  # fmt: skip
            seen: dict[str, float] = {}
            committed: dict[str, float] = {}
            returned: dict[str, float] = {}
            done = threading.Event()

            def poll() -> None:
                # only the payments that moved in the last minute: a cheap, steady query
                with psycopg.connect(url, autocommit=True, application_name=BENCH_APP) as pc:
                    while not done.is_set():
                        now = time.perf_counter()
                        for (bid,) in pc.execute(
                            "SELECT booking_id::text FROM payments WHERE status = 'succeeded'"
                            " AND updated_at > now() - interval '60 seconds'"
                        ):
                            seen.setdefault(bid, now)
                        if len(seen) >= len(pairs):
                            return
                        time.sleep(0.005)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            cpu.start()
            t0 = time.perf_counter()
            wall0 = time.time() - t0  # perf_counter → the wall clock the database stamps with
            for i, (booking_id, _) in enumerate(pairs):
                due = t0 + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                committed[booking_id] = due  # open loop: a late send counts
                standin.succeed(refs[booking_id])
                returned[booking_id] = time.perf_counter()
            poller.join(timeout=120)
            done.set()
            confirmed = conn.execute(
                "SELECT count(*) FROM bookings WHERE status = 'confirmed'"
            ).fetchone()[0]  # type: ignore[index]
            c2c = [(seen[b] - committed[b]) * 1000 for b in committed if b in seen]
            c2c_cpu = cpu.per_unit(len(pairs))
            report["commit_to_confirmed"] = {
                "payments": len(pairs), "rate_per_s": args.rate, "confirmed": confirmed,
                "latency_ms": _pct(c2c), "cpu_ms_per_confirmation": c2c_cpu,
                "worker_concurrency": args.worker_concurrency,
                "standin_latency_ms": args.standin_latency_ms,
                "stages_ms": _stages(conn, committed, seen, wall0),
                "succeed_call_ms": _pct([(returned[b] - committed[b]) * 1000 for b in returned]),
            }  # fmt: skip
            print("commit-to-confirmed:", report["commit_to_confirmed"], flush=True)
            standin.config(webhook_url="", latency_ms="0")

            # 3. payment-intent creation ----------------------------------------------------
            pairs = _market(conn, args.intents)
            jobs = []
            for booking_id, student_id in pairs:
                token = create_access_token(user_id=uuid.UUID(student_id), role="student")
                jobs.append(
                    (f"/api/v1/bookings/{booking_id}/payment-intent",
                     {"Authorization": f"Bearer {token}"}, None)
                )  # fmt: skip
            standin.stats(reset=True)
            cpu.start()
            lat, errors, wall = asyncio.run(
                _post_all(api_url, jobs, rate=args.rate, concurrency=args.concurrency)
            )
            intent_cpu = cpu.per_unit(len(jobs))
            served = standin.stats()
            api_pct = _pct(lat)
            standin_pct = {**served["server_ms"], "n": served["requests"]}
            report["intent_creation"] = {
                "requests": len(jobs), "errors": errors, "rate_per_s": args.rate,
                "achieved_per_s": round(len(jobs) / wall, 1), "api_latency_ms": api_pct,
                "standin_server_ms": standin_pct,
                "api_p95_less_standin_p95_ms": round(api_pct["p95"] - (standin_pct["p95"] or 0), 2),
                "cpu_ms_per_intent": intent_cpu,
            }  # fmt: skip
            print("intent creation:", report["intent_creation"], flush=True)
    finally:
        procs.stop_all()
        if not args.keep:
            with psycopg.connect(admin, autocommit=True) as a:
                a.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")
    return report


if __name__ == "__main__":
    main()
