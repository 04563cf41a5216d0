"""`make loadtest`: one Locust run, its report, its plots and the SLO gate.

    python -m loadtests.run --users 64 --spawn-rate 16 --duration 60s [--host https://…]

Without `--host`, migrates and seeds `DATABASE_URL` as `make run` does and starts the
stack (indexer + API with `--workers` uvicorn workers) on `--port`, stopping it at the end.
Outputs go to `artifacts/loadtest/<UTC timestamp>/`: `locust_stats.csv`,
`locust_stats_history.csv`, `locust_failures.csv`, `report.html` (Locust's), `summary.json`,
`latency.png`, `throughput.png`, `gate.json`, `report.md` (the figures as a Markdown table)
and `stack.log`. The exit code is the gate's
(0 pass, 1 SLO breached or error budget spent, 2 unreadable input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from loadtests import gate, invariants
from loadtests.plot import plot_history
from loadtests.stack import ROOT, Stack, prepare_database, run_locust
from loadtests.summary import markdown


def timestamp() -> str:
    """A UTC timestamp usable as a directory name."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def payments_env(api_port: int) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of a started stack's Stripe stand-in (on `LOADTEST_STANDIN_PORT`,
    default the API's port + 21; LiveKit's on `LOADTEST_LIVEKIT_PORT`, default + 22) and of the Locust users who pay through it and re-send
    its webhooks signed with its secret (the settings' default unless
    STRIPE_WEBHOOK_SECRET is set)."""
    port = int(os.environ.get("LOADTEST_STANDIN_PORT", api_port + 21))
    url = f"http://127.0.0.1:{port}"
    # the LiveKit stand-in of infra/run-all.sh too, off its default port (7880)
    livekit = os.environ.get("LOADTEST_LIVEKIT_PORT", str(api_port + 22))
    stack = {"STRIPE_STANDIN_PORT": str(port), "STRIPE_STANDIN_URL": url, "LIVEKIT_PORT": livekit}
    locust = {
        "LOCUST_STRIPE_STANDIN_URL": url,
        "LOCUST_STRIPE_WEBHOOK_SECRET": os.environ.get("STRIPE_WEBHOOK_SECRET", "whsec_standin"),
    }
    return stack, locust


def main(argv: list[str] | None = None) -> int:
    """Run the load test; returns the gate's exit code."""
    ap = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--spawn-rate", type=float, default=16)
    ap.add_argument("--duration", default="60s", help="Locust run time (60s, 5m, …)")
    ap.add_argument("--host", default="", help="deployed API base URL; empty: start the stack")
    ap.add_argument("--port", type=int, default=int(os.environ.get("LOADTEST_PORT", 8100)))
    ap.add_argument("--workers", type=int, default=2, help="uvicorn workers of the started API")
    ap.add_argument(
        "--no-cache", action="store_true", help="start the API with SEARCH_CACHE_ENABLED=false"
    )
    ap.add_argument("--wait-scale", type=float, default=1.0, help="think-time multiplier")
    ap.add_argument(
        "--warmup", type=int, default=None,
        help="unmeasured seconds of the same load first (default 20 when the stack is started "
        "here: fresh pools and caches are start-up, not the steady state; 0 for a --host)",
    )  # fmt: skip
    ap.add_argument("--slo", default=str(gate.DEFAULT_SLO))
    ap.add_argument("--out", default="", help="output directory (default artifacts/loadtest/<ts>)")
    ap.add_argument("--tutors", type=int, default=int(os.environ.get("TUTORS", 20000)))
    ap.add_argument("--coaches", type=int, default=int(os.environ.get("COACHES", 5000)))
    ap.add_argument("--students", type=int, default=int(os.environ.get("STUDENTS", 1000)))
    args = ap.parse_args(argv)

    out = Path(args.out) if args.out else ROOT / "artifacts" / "loadtest" / timestamp()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[loadtest] outputs: {out}")
    env: dict[str, str] = {}
    stack = None
    host = args.host.rstrip("/")
    if not host:
        prepare_database(args.tutors, args.coaches, args.students)
        stack_env, pay_env = payments_env(args.port)
        stack = Stack(port=args.port, workers=args.workers, cache=not args.no_cache,
                      log_path=out / "stack.log", env=stack_env,
                      indexer_metrics_port=int(os.environ.get("LOADTEST_INDEXER_METRICS_PORT", 9118)))  # fmt: skip
        print(f"[loadtest] starting the stack on {stack.url} ({args.workers} API workers, "
              f"cache {'off' if args.no_cache else 'on'})")  # fmt: skip
        stack.start()
        host = stack.url
        env["LOCUST_DATABASE_URL"] = os.environ.get("DATABASE_URL", "")
        env["LOADTEST_API_WORKERS"] = str(args.workers)
        env["LOADTEST_SEARCH_CACHE"] = "off" if args.no_cache else "on"
        env.update(pay_env)
    warmup = args.warmup if args.warmup is not None else (0 if args.host else 20)
    try:
        if warmup > 0:
            print(f"[loadtest] warm-up: {warmup} s at {args.users} users (not measured)")
            run_locust(
                host, out / "warmup", args.users, args.spawn_rate, f"{warmup}s",
                wait_scale=args.wait_scale, reset_stats=True, env=env, quiet=True,
            )  # fmt: skip
        # Measured from the end of the ramp (--reset-stats): the SLOs are for the steady load.
        summary = run_locust(
            host, out, args.users, args.spawn_rate, args.duration,
            wait_scale=args.wait_scale, reset_stats=True, env=env,
        )  # fmt: skip
    finally:
        if stack is not None:
            stack.stop()
    db_url = env.get("LOCUST_DATABASE_URL") or os.environ.get("LOADTEST_DATABASE_URL", "")
    if db_url:
        data = json.loads(summary.read_text())
        data["invariants"] = invariants.check(db_url)
        summary.write_text(json.dumps(data, indent=2))
        broken = {k: len(v) for k, v in data["invariants"].items() if v}
        print(f"[loadtest] invariants: {broken or 'all hold'}")
    history = out / "locust_stats_history.csv"
    if history.exists():
        for png in plot_history(history, out):
            print(f"[loadtest] plot: {png}")
    (out / "report.md").write_text(markdown(json.loads(summary.read_text())))
    code = gate.main([str(summary), "--slo", args.slo, "--json-out", str(out / "gate.json")])
    print(f"[loadtest] report: {out / 'report.html'}  summary: {summary}  gate exit code: {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
