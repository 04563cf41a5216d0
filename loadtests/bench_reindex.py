"""Full reindex benchmark (`make bench-reindex`).

Seeds 200,000 tutors + 50,000 coaches into a scratch database (`<DATABASE_URL db>_bench_reindex`
unless `--database`; kept between runs, `--reseed` redoes it), builds the search documents,
starts a real Celery worker (solo pool) on it, queues `indexer.reindex` the way the API
does, follows the run until it ends and reports the wall time (request → swapped), the
documents per second, the time of each phase and the machine's load (`/proc/loadavg`
before and after: the cores may be shared). Writes `artifacts/bench-reindex.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.settings import get_settings
from loadtests.machine import describe, one_line


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ensure_dataset(url: str, admin: str, name: str, reseed: bool) -> None:
    """Create, migrate and seed the benchmark database unless it is already there."""
    with psycopg.connect(admin, autocommit=True) as a:
        exists = a.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not reseed:
            upgrade("head", url)
            with psycopg.connect(url) as c:
                n = c.execute("SELECT count(*) FROM provider_profiles").fetchone()
            if n and n[0] >= 250_000:
                print(f"reusing {name} ({n[0]} providers)")
                return
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)
    from devdata.seed import SeedParams, seed
    from indexer.projection import build_all

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        seed(conn, SeedParams(tutors=200_000, coaches=50_000, students=1000))
        with conn.transaction():
            build_all(conn)
    print(f"seeded and built in {time.perf_counter() - t0:.1f} s")


def start_worker(url: str) -> subprocess.Popen[bytes]:
    """A Celery worker (solo pool) on the benchmark database, ready to take tasks."""
    from core.celery_app import app

    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    name = f"bench-reindex-{os.getpid()}@localhost"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "core.celery_app", "worker", "--pool=solo",
         "--without-gossip", "--without-mingle", "-n", name],
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not app.control.ping(destination=[name], timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the Celery worker did not start")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", help="scratch database name (default <db>_bench_reindex)")
    parser.add_argument("--reseed", action="store_true")
    parser.add_argument("--out", default="artifacts/bench-reindex.json")
    args = parser.parse_args()

    s = get_settings()
    base = s.libpq_database_url
    name = args.database or base.rsplit("/", 1)[1].split("?", 1)[0] + "_bench_reindex"
    url = base.rsplit("/", 1)[0] + "/" + name
    admin = base.rsplit("/", 1)[0] + "/postgres"
    ensure_dataset(url, admin, name, args.reseed)

    from indexer import reindex as service
    from indexer.tasks import reindex

    worker = start_worker(url)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            docs = conn.execute(
                "SELECT (SELECT count(*) FROM tutor_documents), (SELECT count(*) FROM coach_documents)"
            ).fetchone()
            load_before = loadavg()
            t0 = time.perf_counter()
            with conn.transaction():
                run = service.create_run(
                    conn, engine="postgres", kind="all", requested_by=None, queue_timeout_s=600
                )
            reindex.apply_async(kwargs={"engine": "postgres", "kind": "all"}, task_id=str(run.id))
            while True:
                current = service.get_run(conn, run.id)
                if not current.active:
                    break
                time.sleep(0.1)
            wall = time.perf_counter() - t0
            load_after = loadavg()
            deadline = time.monotonic() + 10  # the worker stores the swap's timing just after
            while "swap" not in current.phases and time.monotonic() < deadline:
                time.sleep(0.05)
                current = service.get_run(conn, run.id)
            info = describe(conn)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    if current.state != "succeeded":
        raise SystemExit(f"reindex {current.state}: {current.error}")
    phases: dict[str, Any] = current.phases
    result = {
        "documents": current.done,
        "tutor_documents": docs[0] if docs else None,
        "coach_documents": docs[1] if docs else None,
        "seconds": round(wall, 2),
        "documents_per_s": round(current.done / wall, 1),
        "replayed": current.replayed,
        "phases": phases,
        "parallelism": s.reindex_parallelism,
        "batch_size": s.reindex_batch_size,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "machine": info,
    }
    print(
        f"reindex of {current.done:,} documents: {wall:.1f} s "
        f"({current.done / wall:,.0f} documents/s); load average before {load_before}, "
        f"after {load_after}; {one_line(info)}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
