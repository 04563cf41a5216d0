"""Search benchmark (`make bench-search`).

Seeds 200,000 tutors + 50,000 coaches into `<DATABASE_URL db>_bench_search` (kept between
runs; `--reseed` redoes it), builds the search documents, then:

1. engine: each query class of a fixed mix (real cities incl. dense Paris, radius 5-50 km,
   with/without text, each sort, facets always on) runs `--rounds` times directly on the
   PostgreSQL engine; p50/p95/p99 per class (3 warm-up rounds excluded: the engine's block
   and text match caches are warm, as in a serving process);
   then the text classes again with the text match cache emptied before every query (the
   first search of a word in an area), reported apart as `engine_text_cold_ms`;
2. HTTP, cache off: a uvicorn server (`--workers`, default 2) driven by `wrk` (C, 2
   threads, `--clients` connections, a Lua script rotating `--distinct` rounds of the mix
   — 720 request targets, 278 of them distinct: positions jitter over 21 values per city,
   coach and map classes repeat; with the cache off nothing is cached anyway — the two
   threads starting at different places) for `--seconds`; p50/p95/p99, req/s, errors;
3. HTTP, cache on: the same on warm cache entries (3 rounds of the mix, 54 URLs).

`wrk` is installed with apt-get when missing and running as root; without it (or with
`--client httpx`) both phases use `--clients` concurrent httpx clients in this process,
which share the cores with the server (the server then looks slower than it is) — the
output names the client. wrk runs a closed loop (each connection sends its next request
when the previous answer arrives): its percentiles are the latency at the throughput the
server sustains with `--clients` requests in flight, not at a fixed arrival rate (no
correction for coordinated omission); p95 ≈ `clients / req_per_s` scaled by the spread.

A reused dataset is migrated to head first; when that changed the schema, the documents
are rebuilt (build_all + VACUUM ANALYZE). Prints a table and writes
`artifacts/bench-search.json` with the machine, the PostgreSQL settings, the load average
and the clients described.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

from core.migrate import upgrade
from core.settings import get_settings
from loadtests.machine import describe, one_line

CITIES = {
    "paris": (48.8566, 2.3522),
    "lyon": (45.764, 4.8357),
    "brussels": (50.8503, 4.3517),
    "montreal": (45.5017, -73.5673),
    "dakar": (14.7167, -17.4677),
    "london": (51.5074, -0.1278),
}

# (class name, endpoint, params); lat/lng jittered per round so the classes are not one query.
MIX: list[tuple[str, str, dict[str, Any]]] = [
    ("paris_5km_distance", "tutors", {"city": "paris", "radius_km": 5, "sort": "distance"}),
    ("paris_10km_subject_distance", "tutors", {"city": "paris", "radius_km": 10, "subject": "mathematics", "sort": "distance"}),
    ("paris_20km_rating", "tutors", {"city": "paris", "radius_km": 20, "sort": "rating"}),
    ("paris_50km_price", "tutors", {"city": "paris", "radius_km": 50, "sort": "price"}),
    ("paris_50km_subject_rating", "tutors", {"city": "paris", "radius_km": 50, "subject": "physics", "sort": "rating", "min_rating": 4}),
    ("paris_10km_text_relevance", "tutors", {"city": "paris", "radius_km": 10, "q": "maths", "sort": "relevance"}),
    ("paris_25km_text_distance", "tutors", {"city": "paris", "radius_km": 25, "q": "anglais", "sort": "distance"}),
    ("lyon_15km_filters_price", "tutors", {"city": "lyon", "radius_km": 15, "language": "en", "max_price": 4000, "mode": "in_person", "sort": "price"}),
    ("brussels_10km_rating", "tutors", {"city": "brussels", "radius_km": 10, "sort": "rating"}),
    ("montreal_30km_text", "tutors", {"city": "montreal", "radius_km": 30, "q": "physique", "sort": "relevance"}),
    ("dakar_20km_distance", "tutors", {"city": "dakar", "radius_km": 20, "sort": "distance"}),
    # A selective filter: fewer matches than a page, so the KNN walk must stop at the radius.
    ("montreal_10km_selective_distance", "tutors", {"city": "montreal", "radius_km": 10, "subject": "latin", "min_rating": 4.5, "sort": "distance"}),
    ("london_40km_availability", "tutors", {"city": "london", "radius_km": 40, "available_from": "+2d", "available_to": "+3d", "sort": "rating"}),
    ("coaches_expertise_rating", "coaches", {"expertise": "leadership", "sort": "rating"}),
    ("coaches_text_relevance", "coaches", {"q": "carriere reconversion", "sort": "relevance"}),
    ("coaches_language_kind_price", "coaches", {"language": "en", "kind": "mentor", "sort": "price"}),
    ("map_paris_zoom10_clusters", "map", {"bbox": "1.9,48.6,2.8,49.1", "zoom": 10}),
    ("map_paris_zoom14_points", "map", {"bbox": "2.33,48.85,2.37,48.87", "zoom": 14}),
]  # fmt: skip


def params_for(p: dict[str, Any], i: int) -> dict[str, Any]:
    """Concrete query parameters for round `i` (deterministic jitter ±0.01°)."""
    out = dict(p)
    city = out.pop("city", None)
    if city:
        lat, lng = CITIES[city]
        j = ((i * 7919) % 21 - 10) / 1000
        out["lat"], out["lng"] = round(lat + j, 5), round(lng - j, 5)
    for k in ("available_from", "available_to"):
        if k in out:
            days = int(out[k][1:-1])
            t = time.gmtime(time.time() + days * 86400)
            out[k] = time.strftime("%Y-%m-%dT00:00:00Z", t)
    return out


def pct(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if not v:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "n": 0}

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))], 2)

    return {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "n": len(v)}


def ensure_dataset(url: str, admin: str, name: str, reseed: bool) -> None:
    with psycopg.connect(admin, autocommit=True) as a:
        exists = a.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and not reseed:
            with psycopg.connect(url) as c:
                n = c.execute("SELECT count(*) FROM tutor_documents").fetchone()
            if n and n[0] >= 190_000:
                print(f"reusing {name} ({n[0]} tutor documents)")
                _migrate_reused(url)
                return
        a.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        a.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    upgrade("head", url)
    from devdata.seed import SeedParams, seed
    from indexer.projection import build_all

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        seed(conn, SeedParams(tutors=200_000, coaches=50_000, students=1000))
        t1 = time.perf_counter()
        with conn.transaction():
            build_all(conn)
        conn.execute("VACUUM ANALYZE tutor_documents")
        conn.execute("VACUUM ANALYZE coach_documents")
    print(f"seeded in {t1 - t0:.1f} s, documents built in {time.perf_counter() - t1:.1f} s")


def _revision(url: str) -> str:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else ""


def _migrate_reused(url: str) -> None:
    """Bring a reused dataset to head; rebuild the documents if the schema moved."""
    before = _revision(url)
    upgrade("head", url)
    if _revision(url) == before:
        return
    from indexer.projection import build_all

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            build_all(conn)
        for table in ("tutor_documents", "coach_documents", "tutor_facets", "coach_facets"):
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    print(f"migrated {before} -> head, documents rebuilt in {time.perf_counter() - t0:.1f} s")


async def engine_bench(url: str, rounds: int, cold_text: bool = False) -> dict[str, Any]:
    """p50/p95/p99 per class of the mix. `cold_text`: only the text classes, with the
    engine's text match cache (`search.engines.postgres.text_cache`) emptied before every query — the
    first search of a word in an area (the facet blocks stay cached)."""
    from search.engines.postgres.engine import PostgresEngine
    from search.schemas import CoachQuery, TutorMapQuery, TutorQuery

    engine = await PostgresEngine.open(url, min_size=1, max_size=1)
    gc.freeze()  # as the API process does at startup (`api.app._lifespan`)
    out: dict[str, Any] = {}
    try:
        for name, kind, p in MIX:
            if cold_text and "q" not in p:
                continue
            times = []
            for i in range(rounds + 3):
                params = params_for(p, i)
                if cold_text:
                    engine.block_path.text_cache.clear()
                t = time.perf_counter()
                if kind == "tutors":
                    await engine.search_tutors(TutorQuery(**params))
                elif kind == "coaches":
                    await engine.search_coaches(CoachQuery(**params))
                else:
                    from search.geo import snap_bbox

                    mq = TutorMapQuery(**params)
                    await engine.tutor_map(
                        mq.model_copy(update={"bbox": snap_bbox(mq.bbox, mq.zoom)})
                    )
                if i >= 3:  # warm-up rounds excluded
                    times.append((time.perf_counter() - t) * 1000)
            out[name] = pct(times)
    finally:
        await engine.close()
    return out


_PATHS = {"tutors": "/api/v1/search/tutors", "coaches": "/api/v1/search/coaches",
          "map": "/api/v1/search/tutors/map"}  # fmt: skip


async def http_bench(base: str, clients: int, seconds: float, distinct: int) -> dict[str, Any]:
    reqs = [(_PATHS[k], params_for(p, i)) for i in range(distinct) for _, k, p in MIX]
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=10) as c:
            i = n
            while time.perf_counter() < stop:
                path, params = reqs[i % len(reqs)]
                i += clients
                t = time.perf_counter()
                r = await c.get(path, params=params)
                lat.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    wall = time.perf_counter() - t0
    return {**pct(lat), "req_per_s": round(len(lat) / wall, 1), "errors": errors}


_WRK_LUA = """
local urls = {%s}
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local i = 0
init = function(args)
  -- each thread starts at its own place in the list, so no two walk it in step
  i = math.floor((tid or 0) * #urls / 2)
end
request = function()
  i = i + 1
  return wrk.format("GET", urls[(i %% #urls) + 1])
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


def ensure_wrk() -> str | None:
    """The `wrk` binary, installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    apt = shutil.which("apt-get")
    if found or os.geteuid() != 0 or not apt:
        return found
    print("installing wrk (apt-get)")
    subprocess.run([apt, "install", "-y", "-q", "wrk"], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return shutil.which("wrk")


def wrk_urls(distinct: int) -> list[str]:
    """`distinct` rounds of the mix as request targets (path + query string)."""
    return [
        str(httpx.URL(_PATHS[k], params=params_for(p, i)))
        for i in range(distinct)
        for _, k, p in MIX
    ]


def wrk_bench(wrk: str, base: str, clients: int, seconds: float, distinct: int) -> dict[str, Any]:
    """HTTP latency and throughput with wrk (2 threads, `clients` connections, closed loop)."""
    reqs = wrk_urls(distinct)
    lua = _WRK_LUA % ", ".join(json.dumps(r) for r in reqs)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    try:
        out = subprocess.run(
            [wrk, "-t2", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", f.name,
             base],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[len("WRKJSON ") :])
    return {
        "p50": round(r["p50"], 2), "p95": round(r["p95"], 2), "p99": round(r["p99"], 2),
        "n": r["requests"], "req_per_s": round(r["requests"] / r["seconds"], 1),
        "errors": r["errors"], "urls": len(reqs),
        "distinct_urls": len(set(reqs)),
        "client": f"wrk -t2 -c{clients} (closed loop, in its own process)",
        "latency": "closed loop: at the sustained throughput, no coordinated-omission correction",
    }  # fmt: skip


def pg_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The PostgreSQL settings the figures depend on."""
    names = ("shared_buffers", "work_mem", "effective_cache_size", "jit", "random_page_cost")
    return {n: str(conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0])  # type: ignore[index]
            for n in names}  # fmt: skip


def serve(
    url: str,
    port: int,
    cache: bool,
    workers: int = 1,
    pool: tuple[int, int] = (4, 4),
    checkout: str | None = None,
) -> subprocess.Popen[bytes]:
    """A uvicorn server on `url` (`pool` = search pool min, max size per worker), with
    the code of `checkout` (a directory; default: this one) and this venv's packages."""
    env = dict(os.environ)
    env.update(DATABASE_URL=url, SEARCH_CACHE_ENABLED=str(cache).lower(), LOG_LEVEL="WARNING",
               SEARCH_POOL_MIN_SIZE=str(pool[0]), SEARCH_POOL_MAX_SIZE=str(pool[1]))  # fmt: skip
    if checkout is not None:
        env["PYTHONPATH"] = checkout
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=env, cwd=checkout,
    )  # fmt: skip
    # up: /healthz answers and uvicorn's supervisor has started its `workers` processes
    # (each opens its search pool in its lifespan, before it takes connections; the
    # warm-up requests of `http_phase` then reach every worker)
    for _ in range(300):
        try:
            up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            up = False
        kids = _children(proc.pid)
        if up and (workers == 1 or kids is None or len(kids) >= workers):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("uvicorn did not start")


def _children(pid: int) -> list[str] | None:
    """The child process ids of `pid` (Linux; None where /proc does not tell)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return None


def _cpu_ticks(server_pid: int) -> dict[str, int]:
    """CPU clock ticks (user + system) so far of the API server's process tree, of the
    PostgreSQL processes, and of the whole machine (busy, all cores), from /proc (Linux;
    empty elsewhere)."""
    out = {"api": 0, "postgres": 0, "machine": 0}
    try:
        parents: dict[int, int] = {}
        ticks: dict[int, tuple[str, int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
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
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        out["machine"] = sum(int(x) for x in cpu) - int(cpu[3]) - int(cpu[4])
    except OSError:
        return {}
    return out


def cpu_per_request(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, int]:
    """µs of CPU per request between two `_cpu_ticks` readings over `n` requests."""
    hz = os.sysconf("SC_CLK_TCK")
    return {k: round((after[k] - before[k]) / hz * 1e6 / n) for k in before}


def bench_database() -> tuple[str, str, str]:
    """(libpq URL, maintenance database URL, name) of the benchmark's database: the
    configured database's name + `_bench_search`, on the same server."""
    base = get_settings().libpq_database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench_search"
    return base.rsplit("/", 1)[0] + "/" + name, base.rsplit("/", 1)[0] + "/postgres", name


def http_phase(
    url: str, args: argparse.Namespace, cache: bool, wrk: str | None, pool: tuple[int, int]
) -> dict[str, Any]:
    """One HTTP phase on a fresh server: cache off (`args.distinct` rounds of the mix, so
    no URL repeats within a few hundred requests) or on (3 rounds, warmed first)."""
    distinct = 3 if cache else args.distinct
    load = os.getloadavg()
    proc = serve(url, args.port, cache, args.workers, pool)
    try:
        base_url = f"http://127.0.0.1:{args.port}"
        if cache:  # warm every key once
            asyncio.run(http_bench(base_url, 4, 5, 3))
        else:  # load the catalogue bits in every worker
            asyncio.run(http_bench(base_url, 2 * args.workers, 2, 1))
        before = _cpu_ticks(proc.pid)
        if wrk:
            res = wrk_bench(wrk, base_url, args.clients, args.seconds, distinct)
        else:
            res = asyncio.run(http_bench(base_url, args.clients, args.seconds, distinct))
            res["client"] = f"httpx, {args.clients} concurrent clients in the benchmark process"
        after = _cpu_ticks(proc.pid)
        if before and after and res.get("n"):
            # µs of CPU per request: the API workers, PostgreSQL, the whole machine
            res["cpu_us_per_request"] = cpu_per_request(before, after, res["n"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    res.update(workers=args.workers, pool=list(pool), loadavg_before=load)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    ap.add_argument("--pool", default="4,4", help="search pool min,max size per worker")
    ap.add_argument("--distinct", type=int, default=40, help="rounds of the mix, cache off")
    ap.add_argument("--client", choices=("wrk", "httpx"), default="wrk")
    ap.add_argument("--skip-engine", action="store_true", help="HTTP phases only")
    ap.add_argument("--reseed", action="store_true")
    args = ap.parse_args()
    url, admin, name = bench_database()
    ensure_dataset(url, admin, name, args.reseed)
    with psycopg.connect(url) as conn:
        machine = describe(conn)
        machine["postgres_settings"] = pg_settings(conn)
    machine["loadavg_before"] = os.getloadavg()
    engine = {} if args.skip_engine else asyncio.run(engine_bench(url, args.rounds))
    for k, v in engine.items():
        print(f"engine {k:40} p50 {v['p50']:8.2f}  p95 {v['p95']:8.2f}  p99 {v['p99']:8.2f} ms")
    cold = {} if args.skip_engine else asyncio.run(engine_bench(url, 20, cold_text=True))
    report: dict[str, Any] = {"machine": machine, "engine_ms": engine,
                              "engine_text_cold_ms": cold}  # fmt: skip
    wrk = ensure_wrk() if args.client == "wrk" else None
    pool = (int(args.pool.split(",")[0]), int(args.pool.split(",")[1]))
    for cache in (False, True):
        report["http_cache_on" if cache else "http_cache_off"] = http_phase(
            url, args, cache, wrk, pool
        )
    machine["loadavg_after"] = os.getloadavg()
    out = Path("artifacts/bench-search.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"machine: {one_line(machine)}")
    print(f"{'engine class':40} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)")
    for k, v in engine.items():
        print(f"{k:40} {v['p50']:8.2f} {v['p95']:8.2f} {v['p99']:8.2f}")
    for k, v in cold.items():
        print(f"{k + ' (text cache cold)':40} {v['p50']:8.2f} {v['p95']:8.2f} {v['p99']:8.2f}")
    for k in ("http_cache_off", "http_cache_on"):
        v = report[k]
        print(f"{k}: p50 {v['p50']} ms, p95 {v['p95']} ms, p99 {v['p99']} ms, "
              f"{v['req_per_s']} req/s, {v['errors']} errors ({v['client']}, "
              f"{v['workers']} uvicorn workers)")  # fmt: skip
        if "cpu_us_per_request" in v:
            c = v["cpu_us_per_request"]
            print(f"  CPU per request: API {c['api']} µs, PostgreSQL {c['postgres']} µs,"
                  f" machine {c['machine']} µs ({os.cpu_count()} cores: at most"
                  f" {(os.cpu_count() or 1) * 1e6 / max(c['machine'], 1):.0f} req/s)")  # fmt: skip
    print(f"load average before {machine['loadavg_before']}, after {machine['loadavg_after']}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
