"""CPU per search request in the API process (`python -m loadtests.bench_search_cpu`), cache
off, or with `--cached` on warm cache entries (every measured request a hit: the HTTP
edge, the query model and one Redis round trip, no engine).

Drives the ASGI app directly (no HTTP server, no client in the process: the figures are
the app's own CPU) over the benchmark's URL mix, one request at a time, on the benchmark
dataset (`<DATABASE_URL db>_bench_search`, see `loadtests.bench_search`). Prints

- the process CPU per request (`time.process_time`, no profiler attached), overall and
  per endpoint — PostgreSQL's own CPU is another process and is not included;
- with `--profile`, a py-spy sampling (`--gil`: only while this process runs Python, so
  waiting for PostgreSQL is not counted) of one more pass, attributed by component
  (FastAPI routing and parameters, query model, engine Python, psycopg, response
  models, JSON, middleware/logging) in µs per request.

`--log-level INFO` (the production default) includes the access log line (written to
/dev/null); the HTTP benchmark's server runs at WARNING.

`--instructions` counts instead the machine instructions per request of the app's
process with valgrind's callgrind (installed with apt-get when missing and running as
root): one run of the warm-up passes only and one with a measured pass more, the
difference divided by the requests. Instruction counts do not depend on what else the
machine runs (CPU time per request does, from one run to the next on a shared machine),
so they are the figure for an A/B of the API's own code (PostgreSQL's work is another
process, not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from loadtests.attribution import print_attribution

# Components, by the innermost frame of a sample that belongs to one of them (pydantic
# frames count for their caller: query model, FastAPI parameters, or response models).
ANCHORS: list[tuple[str, str]] = [
    ("psycopg", "psycopg (protocol, rows)"),
    ("psycopg_pool", "psycopg (protocol, rows)"),
    ("search/facets.py", "engine: facet arithmetic"),
    ("search/engines/postgres/", "engine: SQL build, rows to dicts"),
    ("search/schemas.py", "query model"),
    ("search/cursor.py", "engine: SQL build, rows to dicts"),
    ("search/geo.py", "engine: SQL build, rows to dicts"),
    ("api/routers/search.py", "handler"),
    ("search/service.py", "service, cache, JSON"),
    ("search/cache.py", "service, cache, JSON"),
    ("api/middleware.py", "middleware, access log, metrics"),
    ("structlog", "middleware, access log, metrics"),
    ("logging/", "middleware, access log, metrics"),
    ("prometheus_client", "middleware, access log, metrics"),
    ("fastapi", "FastAPI/Starlette routing, params"),
    ("starlette", "FastAPI/Starlette routing, params"),
    ("asyncio", "event loop"),
    ("uvloop", "event loop"),
]
_FACET_FUNCS = ("_facets", "_arithmetic", "_expand", "_Bits.")


def component(stack: list[str]) -> str:
    """The component of one sampled stack (outermost frame first)."""
    below_pydantic = False
    for frame in reversed(stack):
        if "pydantic" in frame:
            below_pydantic = True
            continue
        for anchor, name in ANCHORS:
            if anchor in frame:
                if name.startswith("engine") and any(f in frame for f in _FACET_FUNCS):
                    return "engine: facet arithmetic"
                if below_pydantic and anchor in ("search/engines/postgres/", "search/service.py"):
                    return "response models (pydantic)"
                return name
    return "other"


def requests(distinct: int) -> list[tuple[str, str, str]]:
    """(query class, path, query string) of `distinct` rounds of the benchmark's mix."""
    from loadtests.bench_search import _PATHS, MIX, params_for

    return [
        (name, _PATHS[k], urlencode(params_for(p, i), doseq=True))
        for i in range(distinct)
        for name, k, p in MIX
    ]


async def call(app: Any, path: str, qs: str) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": qs.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8765"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8765),
    }
    status = 0
    body = b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


def _start_spy(out: str) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy): no attribution")
        return None
    return subprocess.Popen(
        [spy, "record", "--gil", "-r", "997", "--format", "raw", "-o", out,
         "--pid", str(os.getpid())],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _report(out: str, cpu: float, top_n: int, keep: str | None) -> None:
    share: dict[str, int] = defaultdict(int)
    top: dict[str, int] = defaultdict(int)
    for line in Path(out).read_text().splitlines():
        stack_text, _, n = line.rpartition(" ")
        stack = stack_text.split(";")
        if not any(f.startswith("call (") and "bench_search_cpu" in f for f in stack):
            continue  # not serving a request (the sleep before, the loop idling)
        share[component(stack)] += int(n)
        top[stack[-1]] += int(n)
    if keep:
        shutil.move(out, keep)
    else:
        os.unlink(out)
    print_attribution("request", cpu, share, top, top_n)


async def profile(app: Any, reqs: list[tuple[str, str, str]], args: argparse.Namespace) -> None:
    """Sample this process with py-spy (GIL holder only = CPU) over one more pass."""
    with tempfile.NamedTemporaryFile(suffix=".txt", delete=False) as f:
        out = f.name
    proc = _start_spy(out)
    if proc is None:
        return
    await asyncio.sleep(1.0)  # attached
    c = time.process_time()
    for _, path, qs in reqs:
        await call(app, path, qs)
    cpu = (time.process_time() - c) / len(reqs)
    proc.send_signal(signal.SIGINT)
    await asyncio.to_thread(proc.wait, 30)
    _report(out, cpu, args.top, args.raw)


async def passes(distinct: int, measured: bool) -> None:
    """Two warm-up passes of `distinct` rounds of the mix (the first fills the cache, when
    it is on: the generation is bumped first, so each run starts on an empty cache) and,
    when `measured`, a third: the program valgrind runs for `--instructions`."""
    from api.app import create_app

    app = create_app()
    reqs = requests(distinct)
    async with app.router.lifespan_context(app):
        cache = app.state.search_service.cache
        if cache is not None:  # both runs start on an empty cache: the first pass fills it
            await cache.bump_generation()
        for _ in range(3 if measured else 2):
            for _, path, qs in reqs:
                status, _ = await call(app, path, qs)
                assert status == 200, (status, path, qs)


def instructions(distinct: int, cached: bool) -> None:
    """Instructions per request under callgrind (see the module docstring)."""
    valgrind, apt = shutil.which("valgrind"), shutil.which("apt-get")
    if valgrind is None and os.geteuid() == 0 and apt:
        subprocess.run([apt, "install", "-y", "-q", "valgrind"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind not found (apt-get install valgrind)")
    counts = []
    for measured in (False, True):
        out = subprocess.run(
            [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
             "-m", "loadtests.bench_search_cpu", "--passes", str(distinct),
             *(["--measured"] if measured else []), *(["--cached"] if cached else [])],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
        ).stderr  # fmt: skip
        line = next(x for x in out.splitlines() if "Collected" in x)
        counts.append(int(line.split()[-1]))
    n = distinct * len(requests(1))
    from loadtests.machine import describe, one_line

    print(f"{n} requests, {_cache(cached)}, under callgrind ({one_line(describe())})")
    print(f"instructions per request: {(counts[1] - counts[0]) / n / 1e6:.2f} M")


async def run(args: argparse.Namespace) -> None:
    from api.app import create_app

    app = create_app()
    async with app.router.lifespan_context(app):
        await _measure(app, args)


async def _measure(app: Any, args: argparse.Namespace) -> None:
    reqs = requests(args.distinct)
    if args.only:
        reqs = [r for r in reqs if r[0] in args.only.split(",")]
        if not reqs:
            raise SystemExit(f"no query class named {args.only!r}")
    # warm-up: pool, catalogue bits, imports; with the cache on, every entry
    for _, path, qs in reqs if args.cached else reqs[: len(reqs) // 4]:
        status, _ = await call(app, path, qs)
        assert status == 200, (status, path, qs)
    by_class: dict[str, list[float]] = defaultdict(list)
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    for name, path, qs in reqs:
        c = time.process_time()
        await call(app, path, qs)
        by_class[name].append(time.process_time() - c)
    cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
    n = len(reqs)
    print(f"{n} requests, {_cache(args.cached)}, log level {args.log_level}")
    print(f"CPU per request: {cpu / n * 1e6:8.0f} µs   (wall {wall / n * 1e3:.2f} ms)")
    for name, v in by_class.items():
        print(f"  {name:34} {sum(v) / len(v) * 1e6:8.0f} µs  n={len(v)}")
    if args.profile:
        await profile(app, reqs, args)


def _cache(cached: bool) -> str:
    return "cached (warm entries: every request a hit)" if cached else "cache off"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--distinct", type=int, default=20, help="rounds of the mix (18 URLs each)")
    ap.add_argument("--profile", action="store_true", help="also attribute CPU with py-spy")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--only", help="only these query classes (comma-separated names)")
    ap.add_argument("--raw", help="keep py-spy's raw (collapsed) stacks in this file")
    ap.add_argument("--instructions", action="store_true", help="count instructions (callgrind)")
    ap.add_argument("--cached", action="store_true", help="cache on, measured on warm entries")
    ap.add_argument("--passes", type=int, help=argparse.SUPPRESS)  # valgrind's program
    ap.add_argument("--measured", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.instructions:
        instructions(args.distinct, args.cached)
        return
    from core.settings import get_settings

    base = get_settings().libpq_database_url
    name = base.rsplit("/", 1)[1].split("?")[0] + "_bench_search"
    os.environ["DATABASE_URL"] = get_settings().database_url.rsplit("/", 1)[0] + "/" + name
    os.environ["SEARCH_CACHE_ENABLED"] = "true" if args.cached else "false"
    os.environ["LOG_LEVEL"] = args.log_level
    os.environ["SEARCH_POOL_MIN_SIZE"] = "1"
    os.environ["SEARCH_POOL_MAX_SIZE"] = "4"
    get_settings.cache_clear()
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the access log, at INFO
    import uvloop

    if args.passes is not None:
        uvloop.run(passes(args.passes, args.measured))
        return
    uvloop.run(run(args))


if __name__ == "__main__":
    main()
