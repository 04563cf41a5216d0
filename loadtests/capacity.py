"""`make capacity`: the highest sustained request rate within the SLOs (mixed profile).

    python -m loadtests.capacity [--steps 8,16,32,…] [--step-duration 30] [--cache both]

For each cache mode (the API started with `SEARCH_CACHE_ENABLED=true`, then `false`), it
starts the stack once, then runs the Locust users (same mix and think times as
`make loadtest`) at each user count of `--steps` for `--step-duration` seconds after the
ramp-up (`--reset-stats`: the ramp is not measured), after an unmeasured warm-up of
`--warmup` seconds at the first step's load on the freshly started stack. A step holds when every search
endpoint's P95 is within `--target-ms` (default: the stricter search SLO of slo.yaml,
25 ms), the error budget holds and every other SLO of slo.yaml holds (the mixed profile:
booking create, payment intent, webhook ingest, hold → confirmed, no 5xx); the first step
that breaks ends the mode and names the first SLO broken. The report
gives, per mode, the highest step that held: users, total and search req/s, P50/P95/P99
per endpoint and the cache hit ratio. Writes `capacity.json` (and every step's Locust
outputs) and `capacity.md` (the same as Markdown tables for the README) under
`artifacts/loadtest/capacity-<ts>/` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtests import gate
from loadtests.run import payments_env, timestamp
from loadtests.stack import ROOT, Stack, prepare_database, run_locust

SEARCH = (
    "GET /api/v1/search/tutors",
    "GET /api/v1/search/tutors/map",
    "GET /api/v1/search/coaches",
)


def strict_search_target(slo: dict[str, Any]) -> float:
    """The smallest P95 target among the SLOs that cover the search endpoints (25 ms)."""
    targets = [
        float(s["p95_ms"])
        for s in slo["slos"]
        if "p95_ms" in s
        and s.get("status", "active") == "active"
        and set(SEARCH) & set(s["endpoints"])
    ]
    return min(targets) if targets else 25.0


def judge_step(
    summary: dict[str, Any],
    target_ms: float,
    budget: dict[str, Any],
    slo: dict[str, Any] | None = None,
) -> tuple[bool, str]:
    """(held, reason): every search endpoint's P95 ≤ `target_ms`, errors within budget,
    and — with `slo` (the mixed profile) — every other SLO of the gate (booking create,
    payment intent, webhook ingest, hold → confirmed, no 5xx…): the reason names the
    first one broken."""
    by_key = {e["key"]: e for e in summary["endpoints"]}
    for key in SEARCH:
        e = by_key.get(key)
        if e is None or not e["requests"]:
            return False, f"{key}: no request"
        if e["p95_ms"] is None or e["p95_ms"] > target_ms:
            return False, f"{key} P95 {e['p95_ms']} ms > {target_ms:g} ms"
    ratio = float(summary["total"]["error_ratio"])
    if ratio > float(budget.get("max_error_ratio", 0.01)):
        return False, f"error ratio {ratio:.2%} over budget"
    if slo is not None:
        breaches = gate.evaluate(summary, slo).breaches
        if breaches:
            return False, f"first SLO broken: {breaches[0].message}"
    return True, "within SLO"


def step_record(users: int, summary: dict[str, Any], held: bool, reason: str) -> dict[str, Any]:
    """The figures of one step kept in the report."""
    search_rps = sum(e["rps"] for e in summary["endpoints"] if e["key"] in SEARCH)
    return {
        "users": users,
        "held": held,
        "reason": reason,
        "rps": summary["total"]["rps"],
        "search_rps": round(search_rps, 2),
        "error_ratio": summary["total"]["error_ratio"],
        "cache_hit_ratio": summary["cache"]["hit_ratio"],
        "endpoints": {
            e["key"]: {
                k: e[k] for k in ("requests", "rps", "p50_ms", "p95_ms", "p99_ms", "error_ratio")
            }
            for e in summary["endpoints"]
        },
        "total": {k: summary["total"][k] for k in ("requests", "p50_ms", "p95_ms", "p99_ms")},
    }


def run_mode(
    args: argparse.Namespace, cache: bool | None, out: Path, target: float, budget: dict[str, Any]
) -> dict[str, Any]:
    """Step the users up for one cache mode (None: a deployed host, cache as deployed)."""
    label = "deployed" if cache is None else ("cache_on" if cache else "cache_off")
    stack = None
    host = args.host.rstrip("/")
    env: dict[str, str] = {}
    if not host:
        stack_env, pay_env = payments_env(args.port)
        stack = Stack(
            port=args.port,
            workers=args.workers,
            cache=bool(cache),
            log_path=out / label / "stack.log",
            env=stack_env,
        )
        env.update(pay_env)
        stack.start()
        host = stack.url
        env["LOCUST_DATABASE_URL"] = os.environ.get("DATABASE_URL", "")
        env["LOADTEST_API_WORKERS"] = str(args.workers)
        env["LOADTEST_SEARCH_CACHE"] = "on" if cache else "off"
    steps: list[dict[str, Any]] = []
    try:
        if args.warmup > 0:
            # A fresh stack opens its pools and warms PostgreSQL's and Redis' caches on its
            # first requests; those outliers are start-up, not capacity, so they are not judged.
            users = args.steps[0]
            run_locust(
                host, out / label / "warmup", users, max(8.0, users / args.ramp),
                f"{args.warmup}s", wait_scale=args.wait_scale, reset_stats=True, env=env,
                quiet=True,
            )  # fmt: skip
        for users in args.steps:
            rate = max(8.0, users / args.ramp)
            ramp = math.ceil(users / rate)
            step_dir = out / label / f"u{users}"
            path = run_locust(
                host, step_dir, users, rate, f"{ramp + args.step_duration}s",
                wait_scale=args.wait_scale, reset_stats=True, env=env, quiet=True,
            )  # fmt: skip
            summary = json.loads(path.read_text())
            held, reason = judge_step(summary, target, budget, getattr(args, "slo_data", None))
            rec = step_record(users, summary, held, reason)
            steps.append(rec)
            print(f"[capacity] {label} {users:5d} users: {rec['rps']:8.1f} req/s, search P95 "
                  + ", ".join(f"{k.rsplit('/', 1)[1]} {rec['endpoints'].get(k, {}).get('p95_ms')}" for k in SEARCH)
                  + f" ms -> {reason}")  # fmt: skip
            if not held:
                break
    finally:
        if stack is not None:
            stack.stop()
    best = max((s for s in steps if s["held"]), key=lambda s: s["rps"], default=None)
    return {
        "mode": label,
        "steps": steps,
        "best": best,
        "broke_at": next((s["users"] for s in steps if not s["held"]), None),
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    """One table of every step, then the capacity per mode with per-endpoint percentiles."""
    t = Table(title=f"Capacity within search P95 ≤ {report['target_ms']:g} ms")
    for col in (
        "mode",
        "users",
        "req/s",
        "search req/s",
        "tutors P95",
        "map P95",
        "coaches P95",
        "errors",
        "cache hits",
        "held",
    ):
        t.add_column(col, justify="left" if col in ("mode", "held") else "right")
    for mode in report["modes"]:
        for s in mode["steps"]:
            p95 = [s["endpoints"].get(k, {}).get("p95_ms") for k in SEARCH]
            hit = s["cache_hit_ratio"]
            t.add_row(
                mode["mode"], str(s["users"]), f"{s['rps']:.1f}", f"{s['search_rps']:.1f}",
                *(f"{v:g} ms" if v is not None else "-" for v in p95),
                f"{s['error_ratio']:.2%}", f"{hit:.1%}" if hit is not None else "-",
                "[green]yes[/]" if s["held"] else f"[red]no[/] ({s['reason']})",
            )  # fmt: skip
    console.print(t)
    for mode in report["modes"]:
        best = mode["best"]
        if best is None:
            console.print(
                f"[bold red]{mode['mode']}: no step held the SLO[/] (smallest step {report['steps'][0]} users)"
            )
            continue
        console.print(
            f"[bold]{mode['mode']}: capacity {best['rps']:.1f} req/s ({best['search_rps']:.1f} search req/s) "
            f"at {best['users']} users[/]; broke at {mode['broke_at'] or 'no step (raise --steps)'} users"
        )
        e = Table(show_header=True)
        for col in ("endpoint", "req/s", "P50 ms", "P95 ms", "P99 ms"):
            e.add_column(col, justify="left" if col == "endpoint" else "right")
        for key, v in sorted(best["endpoints"].items()):
            e.add_row(
                key,
                f"{v['rps']:.1f}",
                *(f"{v[k]:g}" if v[k] is not None else "-" for k in ("p50_ms", "p95_ms", "p99_ms")),
            )
        console.print(e)


def capacity_markdown(report: dict[str, Any]) -> str:
    """The capacity per mode as Markdown (for the README): the step table, then the
    per-endpoint percentiles at the capacity."""
    from loadtests.machine import one_line

    out = [
        f"Search P95 target {report['target_ms']:g} ms; steps of {report['step_duration_s']} s "
        f"({', '.join(map(str, report['steps']))} users), {report['api_workers']} API workers, "
        f"think-time scale {report['wait_scale']}; machine: {one_line(report['machine'])}.",
        "",
        "| cache | users | req/s | search req/s | tutors P95 | map P95 | coaches P95 | errors | cache hits | held |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode in report["modes"]:
        for s in mode["steps"]:
            p95 = [s["endpoints"].get(k, {}).get("p95_ms") for k in SEARCH]
            hit = s["cache_hit_ratio"]
            out.append(
                f"| {mode['mode']} | {s['users']} | {s['rps']:.1f} | {s['search_rps']:.1f} | "
                + " | ".join(f"{v:g} ms" if v is not None else "-" for v in p95)
                + f" | {s['error_ratio']:.2%} | {f'{hit:.1%}' if hit is not None else '-'} | "
                + ("yes" if s["held"] else f"no: {s['reason']}")
                + " |"
            )
    for mode in report["modes"]:
        best = mode["best"]
        out.append("")
        if best is None:
            out.append(f"**{mode['mode']}**: no step held the SLO.")
            continue
        out += [
            f"**{mode['mode']}: {best['rps']:.1f} req/s within SLO** ({best['search_rps']:.1f} "
            f"search req/s) at {best['users']} users; broke at {mode['broke_at'] or '-'} users.",
            "",
            "| endpoint | req/s | P50 ms | P95 ms | P99 ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for key, v in sorted(best["endpoints"].items()):
            out.append(
                f"| {key} | {v['rps']:.1f} | {v['p50_ms']} | {v['p95_ms']} | {v['p99_ms']} |"
            )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the capacity search; 0 when every mode held at least its first step."""
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.capacity", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--steps", default="8,16,32,64,128,256,512,1024",
                    type=lambda s: [int(x) for x in s.split(",") if x.strip()])  # fmt: skip
    ap.add_argument("--step-duration", type=int, default=30, help="measured seconds per step")
    ap.add_argument("--ramp", type=float, default=4.0, help="seconds to spawn a step's users")
    ap.add_argument(
        "--warmup", type=int, default=20,
        help="unmeasured seconds at the first step's load after the stack starts (connection "
        "pools, caches, page cache), 0 = none",
    )  # fmt: skip
    ap.add_argument("--cache", choices=("both", "on", "off"), default="both")
    ap.add_argument("--host", default="", help="deployed API (cache mode as deployed)")
    ap.add_argument("--port", type=int, default=int(os.environ.get("LOADTEST_PORT", 8100)))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--wait-scale", type=float, default=1.0)
    ap.add_argument(
        "--target-ms", type=float, default=0.0, help="search P95 target (default: slo.yaml)"
    )
    ap.add_argument("--slo", default=str(gate.DEFAULT_SLO))
    ap.add_argument("--out", default="")
    ap.add_argument("--tutors", type=int, default=int(os.environ.get("TUTORS", 20000)))
    ap.add_argument("--coaches", type=int, default=int(os.environ.get("COACHES", 5000)))
    ap.add_argument("--students", type=int, default=int(os.environ.get("STUDENTS", 1000)))
    args = ap.parse_args(argv)
    slo = gate.load_slo(args.slo)
    args.slo_data = slo
    target = args.target_ms or strict_search_target(slo)
    budget = slo.get("error_budget") or {}
    out = (
        Path(args.out) if args.out else ROOT / "artifacts" / "loadtest" / f"capacity-{timestamp()}"
    )
    out.mkdir(parents=True, exist_ok=True)
    if not args.host:
        prepare_database(args.tutors, args.coaches, args.students)
        modes: list[bool | None] = {"both": [True, False], "on": [True], "off": [False]}[args.cache]  # type: ignore[assignment]
    else:
        modes = [None]
    from loadtests.machine import describe

    report: dict[str, Any] = {
        "target_ms": target,
        "steps": args.steps,
        "step_duration_s": args.step_duration,
        "api_workers": None if args.host else args.workers,
        "wait_scale": args.wait_scale,
        "host": args.host or "local stack",
        "machine": describe(),
        "modes": [run_mode(args, cache, out, target, budget) for cache in modes],
    }
    (out / "capacity.json").write_text(json.dumps(report, indent=2))
    (out / "capacity.md").write_text(capacity_markdown(report))
    print_report(report, Console(width=160))
    print(f"[capacity] -> {out / 'capacity.json'}, {out / 'capacity.md'}")
    return 0 if all(m["best"] is not None for m in report["modes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
