"""A/B of the search API of two checkouts on this machine, alternated.

    python -m loadtests.ab_http /path/to/checkout-a /path/to/checkout-b [--rounds 4]
        [--seconds 10] [--cache]

Both servers (`educonnect serve --workers 2`, each checkout's own code through
PYTHONPATH, this venv's packages) are up at once on the `make bench-search` dataset; wrk
runs the benchmark's mix (`bench_search.wrk_bench`) against one, then the other, the
order swapped each round, so both see the same drift of a shared machine (here, runs of
one build moved by +-15 % from minute to minute). Prints per run and as medians: req/s,
p95 (ms) and CPU per request (µs: the server's process tree, PostgreSQL, the machine).
Each checkout needs its C kernels built (`python setup.py build_ext --inplace`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

from core.settings import get_settings
from loadtests.bench_search import _cpu_ticks, ensure_wrk, wrk_bench


def _serve(checkout: str, url: str, port: int, cache: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=url, SEARCH_CACHE_ENABLED=str(cache).lower(),
               LOG_LEVEL="WARNING", SEARCH_POOL_MIN_SIZE="4", SEARCH_POOL_MAX_SIZE="4",
               PYTHONPATH=checkout)  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2"],
        env=env, cwd=checkout,
    )  # fmt: skip


def _wait(port: int) -> None:
    for _ in range(300):
        try:  # one connection per worker (they are dealt in turn)
            if all(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
                   for _ in range(2)):  # fmt: skip
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server on port {port} did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--cache", action="store_true", help="cache on (3 rounds of the mix)")
    ap.add_argument("--port", type=int, default=8801, help="a's port; b's is the next one")
    args = ap.parse_args()
    base = get_settings().libpq_database_url
    url = base.rsplit("/", 1)[0] + "/" + base.rsplit("/", 1)[1].split("?")[0] + "_bench_search"
    checkouts = [os.path.abspath(args.a), os.path.abspath(args.b)]
    ports = [args.port, args.port + 1]
    distinct = 3 if args.cache else 40
    procs = [_serve(c, url, p, args.cache) for c, p in zip(checkouts, ports, strict=True)]
    runs: list[list[tuple[float, float, int, int, int]]] = [[], []]
    try:
        for p in ports:
            _wait(p)
        wrk = ensure_wrk()
        for p in ports:  # warm: pools open, blocks read
            wrk_bench(wrk, f"http://127.0.0.1:{p}", 16, 3, distinct)
        hz = os.sysconf("SC_CLK_TCK")
        for r in range(args.rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                before = _cpu_ticks(procs[i].pid)
                res: dict[str, Any] = wrk_bench(
                    wrk, f"http://127.0.0.1:{ports[i]}", 16, args.seconds, distinct
                )
                after = _cpu_ticks(procs[i].pid)
                cpu = {k: round((after[k] - before[k]) / hz * 1e6 / res["n"]) for k in before}
                runs[i].append(
                    (res["req_per_s"], res["p95"], cpu["api"], cpu["postgres"], cpu["machine"])
                )
                print(f"{'ab'[i]} {res['req_per_s']:8.1f} req/s  p95 {res['p95']:6.2f} ms  "
                      f"CPU/req: API {cpu['api']} µs, PostgreSQL {cpu['postgres']} µs, "
                      f"machine {cpu['machine']} µs", flush=True)  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
    for i, checkout in enumerate(checkouts):
        cols = list(zip(*runs[i], strict=True))
        med = [statistics.median(c) for c in cols]
        print(f"{'ab'[i]} {checkout}: median {med[0]:.1f} req/s, p95 {med[1]:.2f} ms, CPU/req "
              f"API {med[2]:.0f} µs, PostgreSQL {med[3]:.0f} µs, machine {med[4]:.0f} µs")  # fmt: skip


if __name__ == "__main__":
    main()
