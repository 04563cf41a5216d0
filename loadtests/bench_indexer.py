"""Indexer benchmark: freshness under a steady write rate, and catch-up throughput.

Usage: `python -m loadtests.bench_indexer [--rate 200 --seconds 30 --backlog 50000]`
(`make bench-indexer`). In a scratch database seeded with `--tutors`/`--coaches` and its
documents built:

1. Freshness: the relay runs as its own process (`educonnect indexer run`); a writer
   applies `--rate` provider writes per second (profile and slot changes, each one
   transaction with its outbox row, `loadtests/writes.py`) for `--seconds`. The relay
   records, per event, the outbox insert time and the instant its batch committed
   (`--samples-file`); freshness = the difference. Prints p50/p95/p99 and the achieved
   write rate.
2. Catch-up: with the relay stopped, `--backlog` writes pile up; then
   `educonnect indexer run --once` drains them. Prints events/s.

Writes `artifacts/bench-indexer.json` with the machine described. The scratch database is
dropped at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import quantiles
from typing import Any

import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.settings import get_settings
from devdata.seed import SeedParams, seed
from indexer.projection import build_all
from loadtests.machine import describe, one_line
from loadtests.writes import provider_ids, random_write


def _percentiles(values: list[float]) -> dict[str, float]:
    q = quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "p99": q[98], "max": max(values)}


def _relay(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": url, "INDEXER_METRICS_PORT": "0", "LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "indexer", "run", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _write_at_rate(url: str, ids: list[Any], n: int, rate: float, writers: int) -> float:
    """`n` writes at `rate` per second, spread over `writers` connections (threads: psycopg
    releases the GIL while the server works). Returns the wall time in seconds."""
    t0 = time.perf_counter()

    def work(k: int) -> None:
        rng = random.Random(100 + k)
        with psycopg.connect(url, autocommit=True) as c:
            for i in range(k, n, writers):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                random_write(c, rng, ids, allow_destructive=False)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def _applied(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(events), 0) FROM indexer_checkpoints").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tutors", type=int, default=20_000)
    ap.add_argument("--coaches", type=int, default=5_000)
    ap.add_argument("--rate", type=float, default=200.0, help="writes per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--backlog", type=int, default=50_000)
    ap.add_argument("--writers", type=int, default=4, help="writer connections")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    base = get_settings().libpq_database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench_indexer"
    url = base.rsplit("/", 1)[0] + "/" + name
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)
    report: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        seed(conn, SeedParams(tutors=args.tutors, coaches=args.coaches, students=0))
        with conn.transaction():
            build_all(conn)
        conn.execute("VACUUM ANALYZE")
        ids = provider_ids(conn)
        rng = random.Random(1)
        report["machine"] = describe(conn)

        # 1. freshness at a fixed write rate
        samples = Path(tempfile.mkdtemp()) / "freshness.txt"
        relay = _relay(url, "--samples-file", str(samples))
        time.sleep(1.0)  # let the relay connect and LISTEN before the clock starts
        n = int(args.rate * args.seconds)
        wrote_s = _write_at_rate(url, ids, n, args.rate, args.writers)
        (total,) = conn.execute("SELECT count(*) FROM outbox").fetchone()  # type: ignore[misc]
        deadline = time.monotonic() + 120
        while _applied(conn) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=30)
        fresh_ms = [
            (float(v) - float(c)) * 1000
            for c, v in (line.split() for line in samples.read_text().splitlines())
        ]
        report["freshness_ms"] = _percentiles(fresh_ms)
        report["freshness_events"] = len(fresh_ms)
        report["write_rate_target"] = args.rate
        report["write_rate_achieved"] = round(n / wrote_s, 1)

        # 2. catch-up from a backlog
        t0 = time.perf_counter()
        for _ in range(args.backlog):
            random_write(conn, rng, ids, allow_destructive=False)
        backlog_write_s = time.perf_counter() - t0
        before = _applied(conn)
        t0 = time.perf_counter()
        drain = _relay(url, "--once", "--batch-size", "2000")
        out, err = drain.communicate(timeout=600)
        catchup_s = time.perf_counter() - t0
        if drain.returncode != 0:
            raise SystemExit(err)
        caught = _applied(conn) - before
        report["catchup"] = {
            "events": caught,
            "seconds": round(catchup_s, 2),
            "events_per_s": round(caught / catchup_s),
            "relay_reported": out.strip(),
            "backlog_written_in_s": round(backlog_write_s, 1),
        }
    out_path = Path("artifacts/bench-indexer.json")
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2))
    f = report["freshness_ms"]
    print(f"machine: {one_line(report['machine'])}")
    print(
        f"freshness at {report['write_rate_achieved']} writes/s (target {args.rate}) over "
        f"{report['freshness_events']} events: p50 {f['p50']:.1f} ms, p95 {f['p95']:.1f} ms, "
        f"p99 {f['p99']:.1f} ms, max {f['max']:.1f} ms"
    )
    c = report["catchup"]
    print(
        f"catch-up: {c['events']} events in {c['seconds']} s = {c['events_per_s']:,} events/s "
        f"(process start included; relay: {c['relay_reported']}) -> {out_path}"
    )
    if not args.keep:
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
