"""A/B of the search API of two checkouts on this machine, alternated.

    python -m loadtests.ab_http /path/to/checkout-a /path/to/checkout-b [--rounds 4]
        [--seconds 10] [--cache]

Both servers (`educonnect serve --workers 2`, each checkout's own code through
PYTHONPATH, this venv's packages) are up at once on the `make bench-search` dataset; wrk
runs the benchmark's mix (`bench_search.wrk_bench`) against one, then the other, the
order swapped each round, so both see the same drift of a shared machine, whose
throughput moves from minute to minute. Prints per run and as medians: req/s, p95 (ms)
and CPU per request (µs: the server's process tree, PostgreSQL, the machine).
Each checkout needs its C kernels built (`python setup.py build_ext --inplace`).
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from loadtests.bench_search import (
    _cpu_ticks,
    bench_database,
    cpu_per_request,
    ensure_wrk,
    serve,
    wrk_bench,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--cache", action="store_true", help="cache on (3 rounds of the mix)")
    ap.add_argument("--port", type=int, default=8801, help="a's port; b's is the next one")
    args = ap.parse_args()
    url = bench_database()[0]
    checkouts = [os.path.abspath(args.a), os.path.abspath(args.b)]
    ports = [args.port, args.port + 1]
    distinct = 3 if args.cache else 40
    procs = []
    runs: list[list[tuple[float, float, int, int, int]]] = [[], []]
    try:
        for c, p in zip(checkouts, ports, strict=True):  # each waits until it answers
            procs.append(serve(url, p, args.cache, workers=2, checkout=c))
        wrk = ensure_wrk()
        for p in ports:  # warm: pools open, blocks read
            wrk_bench(wrk, f"http://127.0.0.1:{p}", 16, 3, distinct)
        for r in range(args.rounds):
            for i in (0, 1) if r % 2 == 0 else (1, 0):
                before = _cpu_ticks(procs[i].pid)
                res: dict[str, Any] = wrk_bench(
                    wrk, f"http://127.0.0.1:{ports[i]}", 16, args.seconds, distinct
                )
                after = _cpu_ticks(procs[i].pid)
                cpu = cpu_per_request(before, after, res["n"])
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
