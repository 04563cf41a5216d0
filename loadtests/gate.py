"""The SLO gate: `python -m loadtests.gate SUMMARY.json|PREFIX_stats.csv [--slo loadtests/slo.yaml]`.

Reads a Locust run (the summary JSON written by the locustfile, or Locust's own
`*_stats.csv`), checks every latency SLO of the SLO file per endpoint and the error
budget, prints a table, and exits:

- 0 when every checked SLO is met and the error budget holds;
- 1 when an SLO is breached or the error budget is spent (each breach is printed as
  `BREACH <slo>: <endpoint> <metric> <measured> > <target>`);
- 2 when the input cannot be read.

Planned endpoints (not built yet) without requests are skipped with their note.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

DEFAULT_SLO = Path(__file__).with_name("slo.yaml")
_CSV_PERCENTILES = {"p50_ms": "50%", "p90_ms": "90%", "p95_ms": "95%", "p99_ms": "99%", "p999_ms": "99.9%"}  # fmt: skip


class GateInputError(Exception):
    """The run or the SLO file cannot be read."""


@dataclass
class Check:
    """One line of the report: an SLO target on one endpoint (or the error budget)."""

    slo: str
    endpoint: str
    metric: str
    target: float | None
    measured: float | None
    requests: int
    outcome: str  # PASS | BREACH | SKIP
    note: str = ""

    @property
    def message(self) -> str:
        """One human-readable line."""
        unit = " ms" if self.metric.endswith("_ms") else ""
        if self.outcome == "SKIP" or self.measured is None:
            return f"{self.outcome} {self.slo}: {self.endpoint} ({self.note})"
        return (
            f"{self.outcome} {self.slo}: {self.endpoint} {self.metric.removesuffix('_ms')} "
            f"{_fmt(self.measured, self.metric)}{unit} {'>' if self.outcome == 'BREACH' else '<='} "
            f"{_fmt(self.target, self.metric)}{unit}" + (f" ({self.note})" if self.note else "")
        )


@dataclass
class GateResult:
    """Every check, and whether the run passed."""

    checks: list[Check] = field(default_factory=list)

    @property
    def breaches(self) -> list[Check]:
        """The failed checks."""
        return [c for c in self.checks if c.outcome == "BREACH"]

    @property
    def passed(self) -> bool:
        """True when nothing is breached."""
        return not self.breaches


def _fmt(v: float | None, metric: str = "") -> str:
    if v is None:
        return "-"
    if metric == "error_ratio":
        return f"{v:.2%}"
    return f"{v:g}"


def _num(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def load_run(path: str | Path) -> dict[str, Any]:
    """A run as `{"endpoints": [...], "total": {...}, "run": {...}, "cache": {...}}` from a
    summary JSON or a Locust `*_stats.csv` (a CSV prefix works too)."""
    p = Path(path)
    if not p.exists() and Path(f"{path}_stats.csv").exists():
        p = Path(f"{path}_stats.csv")
    if not p.exists():
        raise GateInputError(f"{path}: no such file")
    if p.suffix == ".json":
        try:
            data: dict[str, Any] = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise GateInputError(f"{p}: not JSON ({exc})") from None
        if "endpoints" not in data or "total" not in data:
            raise GateInputError(f"{p}: not a load-test summary (no endpoints/total)")
        return data
    endpoints, total = [], None
    with p.open(newline="") as f:
        for row in csv.DictReader(f):
            n = int(float(row["Request Count"]))
            fails = int(float(row["Failure Count"]))
            rec: dict[str, Any] = {
                "method": row["Type"],
                "name": row["Name"],
                "key": f"{row['Type']} {row['Name']}".strip(),
                "requests": n,
                "failures": fails,
                "error_ratio": fails / n if n else 0.0,
                "rps": _num(row["Requests/s"]),
                "avg_ms": _num(row["Average Response Time"]),
            }
            for key, col in _CSV_PERCENTILES.items():
                rec[key] = _num(row.get(col, "")) if n else None
            if row["Name"] == "Aggregated":
                rec["key"] = "Aggregated"
                total = rec
            else:
                endpoints.append(rec)
    if total is None:
        raise GateInputError(f"{p}: no Aggregated row (is it a Locust *_stats.csv?)")
    return {"endpoints": endpoints, "total": total, "run": {}, "cache": {}}


def load_slo(path: str | Path) -> dict[str, Any]:
    """The SLO file (YAML), validated enough to fail early on typos."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise GateInputError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("slos"), list):
        raise GateInputError(f"{path}: expected a mapping with a `slos` list")
    for slo in data["slos"]:
        if not slo.get("endpoints") or not any(k in slo for k in ("p50_ms", "p95_ms", "p99_ms")):
            raise GateInputError(f"{path}: SLO {slo.get('name')!r} needs endpoints and a target")
        if slo.get("status", "active") not in ("active", "planned"):
            raise GateInputError(f"{path}: SLO {slo.get('name')!r}: status active|planned")
    return data


def evaluate(run: dict[str, Any], slo: dict[str, Any]) -> GateResult:
    """Check every SLO target per endpoint and the error budget."""
    result = GateResult()
    by_key = {e["key"]: e for e in run["endpoints"]}
    for s in slo["slos"]:
        name = s.get("name", "?")
        planned = s.get("status", "active") == "planned"
        for endpoint in s["endpoints"]:
            e = by_key.get(endpoint)
            n = int(e["requests"]) if e else 0
            successes = n - int(e["failures"]) if e else 0
            for metric in ("p50_ms", "p95_ms", "p99_ms"):
                if metric not in s:
                    continue
                target = float(s[metric])
                if not e or successes == 0:
                    if planned:
                        note = s.get("note", "planned endpoint, not built yet")
                        outcome = "SKIP"
                    elif s.get("required", False):
                        note, outcome = "no successful request in this run", "BREACH"
                    else:
                        note, outcome = "no request in this run", "SKIP"
                    result.checks.append(
                        Check(name, endpoint, metric, target, None, n, outcome, note)
                    )
                    continue
                measured = e.get(metric)
                ok = measured is not None and float(measured) <= target
                result.checks.append(
                    Check(name, endpoint, metric, target, measured, n, "PASS" if ok else "BREACH")
                )
    budget = slo.get("error_budget") or {}
    total = run["total"]
    if "max_error_ratio" in budget:
        ratio = float(total.get("error_ratio") or 0.0)
        target = float(budget["max_error_ratio"])
        result.checks.append(
            Check(
                "error budget", "all requests", "error_ratio", target, ratio,
                int(total["requests"]), "PASS" if ratio <= target else "BREACH",
                f"{total['failures']} failed of {total['requests']}",
            )
        )  # fmt: skip
    if "max_endpoint_error_ratio" in budget:
        target = float(budget["max_endpoint_error_ratio"])
        min_n = int(budget.get("min_requests", 1))
        for e in run["endpoints"]:
            n = int(e["requests"])
            if n < min_n and int(e["failures"]) == 0:
                continue
            ratio = float(e.get("error_ratio") or 0.0)
            # under min_requests, one failure is noise unless every request failed
            ok = ratio <= target or (n < min_n and e["failures"] < n)
            result.checks.append(
                Check(
                    "error budget (endpoint)", e["key"], "error_ratio", target, ratio, n,
                    "PASS" if ok else "BREACH", f"{e['failures']} failed of {n}",
                )
            )  # fmt: skip
    scenario = run.get("scenario_errors") or {}
    if scenario or "scenario_errors" in run:
        n_err = sum(scenario.values())
        limit = int(budget.get("max_scenario_errors", 0))
        first = next(iter(scenario), "")
        result.checks.append(
            Check(
                "scenario errors", "load-test users", "exceptions", limit, n_err,
                int(total.get("requests") or 0), "PASS" if n_err <= limit else "BREACH",
                f"e.g. {first}" if first else "",
            )
        )  # fmt: skip
    # any 5xx answer fails the run, whatever the error budget (counted by the locustfile)
    if "status_5xx" in (run.get("run") or {}) or run.get("run", {}).get("counts_5xx"):
        fives = run["run"].get("status_5xx") or {}
        n5 = sum(fives.values())
        first5 = next(iter(fives), "")
        result.checks.append(
            Check(
                "no 5xx", "all requests", "5xx", 0, n5, int(total.get("requests") or 0),
                "PASS" if n5 == 0 else "BREACH", f"e.g. {first5}" if first5 else "",
            )
        )  # fmt: skip
    # invariants checked on the database after the run (loadtests/invariants.py)
    for inv, rows in (run.get("invariants") or {}).items():
        result.checks.append(
            Check(
                "invariant", inv, "rows", 0, len(rows), len(rows),
                "PASS" if not rows else "BREACH", f"e.g. {rows[0]}" if rows else "",
            )
        )  # fmt: skip
    if int(total.get("requests") or 0) == 0:
        result.checks.append(
            Check("run", "all requests", "requests", 1, 0, 0, "BREACH", "the run sent no request")
        )
    return result


def print_report(
    result: GateResult, run: dict[str, Any], console: Console, slo: dict[str, Any] | None = None
) -> None:
    """The checks as a rich table, the cache figures, a note when the run's load is not
    the SLO file's documented load, then one line per breach."""
    table = Table(title="SLO gate", show_lines=False)
    for col, justify in (
        ("SLO", "left"), ("endpoint", "left"), ("requests", "right"), ("metric", "left"),
        ("target", "right"), ("measured", "right"), ("result", "left"), ("note", "left"),
    ):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    style = {"PASS": "green", "BREACH": "bold red", "SKIP": "yellow"}
    for c in result.checks:
        unit = " ms" if c.metric.endswith("_ms") else ""
        table.add_row(
            c.slo, c.endpoint, str(c.requests), c.metric.removesuffix("_ms"),
            f"{_fmt(c.target, c.metric)}{unit}",
            f"{_fmt(c.measured, c.metric)}{unit}" if c.measured is not None else "-",
            f"[{style[c.outcome]}]{c.outcome}[/]", c.note,
        )  # fmt: skip
    console.print(table)
    total = run.get("total") or {}
    cache = run.get("cache") or {}
    if total:
        console.print(
            f"run: {total.get('requests')} requests, {total.get('failures')} failures, "
            f"{total.get('rps')} req/s; P50 {total.get('p50_ms')} ms, P95 {total.get('p95_ms')} "
            f"ms, P99 {total.get('p99_ms')} ms"
        )
    if cache.get("hit_ratio") is not None:
        m = cache.get("metrics") or {}
        console.print(
            f"search cache hit ratio: {cache['hit_ratio']:.1%} (responses)"
            + (f", {m['hit_ratio']:.1%} (/metrics)" if m.get("hit_ratio") is not None else "")
        )
    documented = (slo or {}).get("documented_load") or {}
    users = (run.get("run") or {}).get("users")
    if documented and users is not None and users != documented.get("users"):
        console.print(
            f"[yellow]note: this run had {users} users; the stricter search SLO is defined at "
            f"the documented load of {documented.get('users')} users[/]"
        )
    for c in result.breaches:
        console.print(f"[bold red]{c.message}[/]")
    if result.passed:
        console.print("[green]SLO gate passed[/]")
    else:
        console.print(f"[bold red]SLO gate FAILED: {len(result.breaches)} breach(es)[/]")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.gate", description=__doc__.split("\n")[0]
    )
    ap.add_argument("run", help="summary JSON, or a Locust *_stats.csv (or its --csv prefix)")
    ap.add_argument("--slo", default=str(DEFAULT_SLO), help="SLO file (default loadtests/slo.yaml)")
    ap.add_argument("--json-out", help="also write the checks as JSON here")
    args = ap.parse_args(argv)
    console = Console(width=160)
    try:
        run = load_run(args.run)
        slo = load_slo(args.slo)
    except GateInputError as exc:
        console.print(f"[bold red]gate: {exc}[/]")
        return 2
    result = evaluate(run, slo)
    print_report(result, run, console, slo)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "passed": result.passed,
                    "checks": [c.__dict__ | {"message": c.message} for c in result.checks],
                },
                indent=2,
            )
        )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
