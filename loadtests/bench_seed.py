"""Seed benchmark: generate and COPY N providers with their slots into a scratch database.

Usage: `python -m loadtests.bench_seed --providers 100000` (`make bench-seed`). Prints the
wall time, providers/s and slots/s with the machine described, and writes
`artifacts/bench-seed.json`. The scratch database (`<DATABASE_URL db>_bench`) is created,
migrated, and dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.settings import get_settings
from devdata.seed import SeedParams, seed
from indexer.projection import build_all
from loadtests.machine import describe, one_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--providers", type=int, default=100_000)
    ap.add_argument("--coach-share", type=float, default=0.2)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()
    base = get_settings().libpq_database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench"
    url = base.rsplit("/", 1)[0] + "/" + name
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as a:
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)
    coaches = round(args.providers * args.coach_share)
    params = SeedParams(tutors=args.providers - coaches, coaches=coaches, students=1000)
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        result = seed(conn, params)
        t1 = time.perf_counter()
        with conn.transaction():
            build_all(conn)  # the search projection, as `educonnect seed` does
        seconds = time.perf_counter() - t0
        projection_s = time.perf_counter() - t1
        machine = describe(conn)
    report = {
        "providers": args.providers,
        "slots": result.slots,
        "seconds": round(seconds, 2),
        "projection_seconds": round(projection_s, 2),
        "providers_per_s": round(args.providers / seconds),
        "slots_per_s": round(result.slots / seconds),
        "machine": machine,
    }
    out = Path("artifacts/bench-seed.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"machine: {one_line(machine)}")
    print(
        f"seeded {args.providers:,} providers + {result.slots:,} slots in {seconds:.1f} s "
        f"({report['providers_per_s']:,} providers/s, {report['slots_per_s']:,} slots/s; "
        f"search projection {projection_s:.1f} s included) -> {out}"
    )
    if not args.keep:
        with psycopg.connect(admin, autocommit=True) as a:
            a.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


if __name__ == "__main__":
    main()
