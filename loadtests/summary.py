"""The run summary the SLO gate reads, written from Locust's statistics when Locust quits.

Shape (`summary.json`):

    {"run": {host, users, spawn_rate, run_time, started_at, stopped_at, duration_s,
             wait_scale, places_source, places, provider_accounts, locust, machine},
     "endpoints": [{method, name, key: "GET /api/v1/search/tutors", requests, failures,
                    error_ratio, rps, avg_ms, min_ms, max_ms, p50_ms, p90_ms, p95_ms, p99_ms,
                    p999_ms, response_times: {ms: count}}, ...],
     "total": {same fields, key "Aggregated"},
     "errors": [{method, name, error, occurrences}],
     "scenario_errors": {"<User class>: <exception>": count},
     "cache": {"responses": {endpoint: {hit, miss, hit_ratio}}, "hit_ratio": …,
               "metrics": {before, after, delta, hit_ratio} | null}}

Percentiles are Locust's (response times rounded to whole ms below 100 ms, to 10 ms below
1 s). The cache figures come from two sources: the `cached` flag of every search response
the users received (exact, whatever the number of API workers), and the API's
`educonnect_search_cache_total` counters scraped from `/metrics` before and after the run
(exact with one uvicorn worker; with several, one worker's counters answer each scrape).
"""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from pathlib import Path
from typing import Any

RUN_INFO: dict[str, Any] = {}
PERCENTILES = {"p50_ms": 0.5, "p90_ms": 0.9, "p95_ms": 0.95, "p99_ms": 0.99, "p999_ms": 0.999}
_METRIC = re.compile(r"^educonnect_search_cache_total\{([^}]*)\}\s+([0-9.eE+-]+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def scrape_cache_metrics(host: str | None, timeout: float = 5.0) -> dict[str, float] | None:
    """`educonnect_search_cache_total` summed by result (hit, miss, error) from the API's
    `/metrics`, or None when it cannot be read (a deployed API may not expose it)."""
    if not host:
        return None
    try:
        url = host.rstrip("/") + "/metrics"
        if not url.startswith(("http://", "https://")):
            return None
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - scheme checked
            text = r.read().decode()
    except Exception:
        return None
    out: dict[str, float] = {"hit": 0.0, "miss": 0.0, "error": 0.0}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(1)))
            result = labels.get("result", "other")
            out[result] = out.get(result, 0.0) + float(m.group(2))
    return out


def _ratio(hit: float, miss: float) -> float | None:
    return round(hit / (hit + miss), 4) if hit + miss > 0 else None


def entry_dict(entry: Any) -> dict[str, Any]:
    """One Locust `StatsEntry` as the summary's endpoint record."""
    n = int(entry.num_requests)
    method = entry.method or ""
    d: dict[str, Any] = {
        "method": method,
        "name": entry.name,
        "key": f"{method} {entry.name}".strip(),
        "requests": n,
        "failures": int(entry.num_failures),
        # Locust counts failed requests in `num_requests` too
        "error_ratio": round(entry.num_failures / n, 6) if n else 0.0,
        "rps": round(float(entry.total_rps), 2),
        "avg_ms": round(float(entry.avg_response_time), 2),
        "min_ms": round(float(entry.min_response_time or 0), 2),
        "max_ms": round(float(entry.max_response_time), 2),
    }
    for key, q in PERCENTILES.items():
        d[key] = float(entry.get_response_time_percentile(q)) if n else None
    d["response_times"] = {str(k): v for k, v in sorted(entry.response_times.items())}
    return d


def _machine(describe: Any) -> dict[str, Any]:
    """The machine, with the PostgreSQL version when the load test can reach the database."""
    import os

    url = os.environ.get("LOCUST_DATABASE_URL")
    if url:
        try:
            import psycopg

            from core.settings import libpq_url

            with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
                return dict(describe(conn))
        except Exception as exc:  # the figures matter more than the version string
            logging.getLogger("loadtests").warning("no PostgreSQL version: %s", exc)
    return dict(describe())


def build_summary(
    environment: Any,
    cached: dict[tuple[str, bool], int],
    scenario_errors: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The summary of a finished Locust run (its `environment.stats`); `scenario_errors`
    counts exceptions raised by the users' own code (a broken scenario measures nothing)."""
    import locust

    from loadtests.machine import describe

    stats = environment.stats
    opts = environment.parsed_options
    endpoints = [entry_dict(e) for _, e in sorted(stats.entries.items(), key=lambda kv: kv[0])]
    total = entry_dict(stats.total)
    total["key"] = "Aggregated"
    errors = [
        {"method": e.method, "name": e.name, "error": str(e.error), "occurrences": e.occurrences}
        for e in stats.errors.values()
    ]
    responses: dict[str, dict[str, Any]] = {}
    for (name, hit), count in cached.items():
        r = responses.setdefault(name, {"hit": 0, "miss": 0})
        r["hit" if hit else "miss"] += count
    for r in responses.values():
        r["hit_ratio"] = _ratio(r["hit"], r["miss"])
    hits = sum(r["hit"] for r in responses.values())
    misses = sum(r["miss"] for r in responses.values())
    before, after = RUN_INFO.get("metrics_before"), RUN_INFO.get("metrics_after")
    metrics = None
    if before is not None and after is not None:
        delta = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 1) for k in after}
        metrics = {
            "before": before,
            "after": after,
            "delta": delta,
            "hit_ratio": _ratio(delta.get("hit", 0.0), delta.get("miss", 0.0)),
        }
    start = stats.start_time or 0.0
    last = stats.last_request_timestamp or start
    run = {k: v for k, v in RUN_INFO.items() if k not in ("metrics_before", "metrics_after")} | {
        "host": environment.host,
        "users": getattr(opts, "num_users", None),
        "spawn_rate": getattr(opts, "spawn_rate", None),
        "run_time": getattr(opts, "run_time", None),
        "duration_s": round(last - start, 1),
        "locust": locust.__version__,
        "machine": _machine(describe),
    }
    return {
        "run": run,
        "endpoints": endpoints,
        "total": total,
        "errors": errors,
        "scenario_errors": dict(scenario_errors or {}),
        "cache": {
            "responses": responses,
            "hit_ratio": _ratio(hits, misses),
            "metrics": metrics,
        },
    }


def write_summary(
    environment: Any,
    path: str | Path,
    cached: dict[tuple[str, bool], int],
    scenario_errors: dict[str, int] | None = None,
) -> Path:
    """Write `build_summary` as JSON to `path` (parents created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(build_summary(environment, cached, scenario_errors), indent=2))
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The run as Markdown for the README: the load, the machine, then P50/P95/P99 and
    req/s per endpoint and the search cache hit ratio."""
    from loadtests.machine import one_line

    run = summary.get("run") or {}
    cache = summary.get("cache") or {}
    lines = [
        f"Load: {run.get('users')} users (spawn {run.get('spawn_rate')}/s) for "
        f"{run.get('duration_s')} s, think-time scale {run.get('wait_scale')}, against "
        f"{run.get('host')}; cities from {run.get('places_source')}.",
        f"Machine: {one_line(run['machine']) if run.get('machine') else 'unknown'}.",
        "",
        "| endpoint | requests | req/s | P50 ms | P95 ms | P99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in [*summary["endpoints"], summary["total"]]:
        lines.append(
            f"| {e['key']} | {e['requests']} | {e['rps']} | {e['p50_ms']} | {e['p95_ms']} "
            f"| {e['p99_ms']} | {e['error_ratio']:.2%} |"
        )
    hit = cache.get("hit_ratio")
    metrics_hit = (cache.get("metrics") or {}).get("hit_ratio")
    lines += [
        "",
        "Search cache hit ratio: "
        + (f"{hit:.1%} of search responses" if hit is not None else "n/a")
        + (f", {metrics_hit:.1%} from /metrics" if metrics_hit is not None else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"
