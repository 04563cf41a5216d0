"""Load tests: the SLO gate on a tiny real load against the real stack, and on summaries
that breach an SLO or spend the error budget."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.booking.helpers import create_slot
from tests.conftest import create_provider, create_user, free_port, truncate_all

ROOT = Path(__file__).resolve().parents[2]
CI_SLO = Path(__file__).with_name("data") / "slo-ci.yaml"
SEARCH = ("/api/v1/search/tutors", "/api/v1/search/tutors/map", "/api/v1/search/coaches")


def gate(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m loadtests.gate …` as operators run it."""
    return subprocess.run(
        [sys.executable, "-m", "loadtests.gate", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def endpoint(
    method: str, name: str, n: int = 500, p95: float = 12.0, failures: int = 0
) -> dict[str, Any]:
    """A summary endpoint record."""
    return {
        "method": method, "name": name, "key": f"{method} {name}", "requests": n,
        "failures": failures, "error_ratio": failures / n if n else 0.0, "rps": n / 60,
        "p50_ms": p95 / 3, "p90_ms": p95 * 0.9, "p95_ms": p95, "p99_ms": p95 * 1.5,
    }  # fmt: skip


def summary(endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """A summary as the locustfile writes it."""
    n = sum(e["requests"] for e in endpoints)
    f = sum(e["failures"] for e in endpoints)
    total = endpoint("", "Aggregated", n, 15.0, f) | {"key": "Aggregated"}
    return {"run": {}, "endpoints": endpoints, "total": total, "errors": [],
            "scenario_errors": {}, "cache": {"hit_ratio": 0.5}}  # fmt: skip


def healthy() -> list[dict[str, Any]]:
    """Every endpoint of the scenarios within the production SLOs."""
    return [
        endpoint("GET", "/api/v1/search/tutors", p95=18),
        endpoint("GET", "/api/v1/search/tutors/map", p95=11),
        endpoint("GET", "/api/v1/search/coaches", p95=9),
        endpoint("PATCH", "/api/v1/profiles/me", n=30, p95=40),
        endpoint("POST", "/api/v1/availability", n=30, p95=45),
        endpoint("POST", "/api/v1/bookings", n=40, p95=60),
        endpoint("POST", "/api/v1/bookings/{booking_id}/payment-intent", n=40, p95=90),
        endpoint("POST", "/api/v1/payments/webhooks/stripe", n=40, p95=20),
        endpoint("JOURNEY", "hold -> confirmed", n=40, p95=700),
        endpoint("POST", "/api/v1/bookings/{booking_id}/session-token", n=40, p95=30),
    ]


# ---------------------------------------------------------------- the gate on summaries


def test_gate_passes_a_healthy_summary_and_skips_planned_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary(healthy())))
    r = gate(str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SLO gate passed" in r.stdout
    assert "SKIP" in r.stdout


def test_gate_fails_when_search_p95_breaches_and_names_the_endpoint(tmp_path: Path) -> None:
    eps = healthy()
    eps[0] = endpoint("GET", "/api/v1/search/tutors", p95=40)  # product 200 ok, team 25 breached
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary(eps)))
    r = gate(str(path), "--slo", str(ROOT / "loadtests" / "slo.yaml"))
    assert r.returncode == 1
    breaches = [line for line in r.stdout.splitlines() if line.startswith("BREACH")]
    assert breaches == [
        "BREACH search (team, at the documented load): GET /api/v1/search/tutors p95 40 ms > 25 ms"
    ]
    assert "SLO gate FAILED: 1 breach(es)" in r.stdout


def test_gate_fails_when_the_error_budget_is_spent(tmp_path: Path) -> None:
    eps = healthy()
    eps[1] = endpoint("GET", "/api/v1/search/tutors/map", n=500, p95=11, failures=25)  # 5 %
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary(eps)))
    r = gate(str(path))
    assert r.returncode == 1
    assert (
        "BREACH error budget (endpoint): GET /api/v1/search/tutors/map error_ratio 5.00% > 2.00%"
        in r.stdout
    )


def test_gate_fails_when_a_required_endpoint_was_not_exercised(tmp_path: Path) -> None:
    eps = [e for e in healthy() if e["name"] != "/api/v1/search/coaches"]
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary(eps)))
    r = gate(str(path))
    assert r.returncode == 1
    assert "GET /api/v1/search/coaches (no successful request in this run)" in r.stdout


def test_gate_fails_on_any_5xx_and_names_the_endpoint(tmp_path: Path) -> None:
    data = summary(healthy())
    data["run"] = {"counts_5xx": True, "status_5xx": {"POST /api/v1/bookings": 1}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    r = gate(str(path))
    assert r.returncode == 1
    assert "BREACH no 5xx: all requests 5xx 1 > 0 (e.g. POST /api/v1/bookings)" in r.stdout
    data["run"]["status_5xx"] = {}
    path.write_text(json.dumps(data))
    assert gate(str(path)).returncode == 0


def test_gate_fails_on_an_oversold_slot_or_an_unbalanced_ledger(tmp_path: Path) -> None:
    data = summary(healthy())
    data["invariants"] = {"oversold_slots": [], "unbalanced_ledger": []}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(data))
    assert gate(str(path)).returncode == 0
    data["invariants"] = {"oversold_slots": ["(slot-1, 3, 4, 4)"], "unbalanced_ledger": []}
    path.write_text(json.dumps(data))
    r = gate(str(path))
    assert r.returncode == 1
    assert "BREACH invariant: oversold_slots rows 1 > 0 (e.g. (slot-1, 3, 4, 4))" in r.stdout


def test_invariants_count_from_the_bookings(database_url: str) -> None:
    """An oversold slot (its counter bypassed by disabling the trigger) and an unbalanced
    ledger transaction are both found; a clean database has none."""
    from loadtests.invariants import check

    truncate_all(database_url)
    assert check(database_url) == {
        "oversold_slots": [], "seats_counter_drift": [], "unbalanced_ledger": []
    }  # fmt: skip
    with psycopg.connect(database_url, autocommit=True) as db:
        provider = create_provider(db)
        slot = create_slot(db, provider, capacity=1)
        students = [create_user(db) for _ in range(2)]
        db.execute("ALTER TABLE bookings DISABLE TRIGGER USER")
        try:
            for sid in students:
                db.execute(
                    "INSERT INTO bookings (student_id, booked_by, provider_id, slot_id, seats,"
                    " starts_at, ends_at, status, hold_expires_at, price_minor, currency,"
                    " cancel_policy) SELECT %s, %s, provider_id, id, 1, starts_at, ends_at,"
                    " 'confirmed', now(), 3000, 'EUR', '{}'::jsonb"
                    " FROM availability_slots WHERE id = %s",
                    (sid, sid, slot),
                )
        finally:
            db.execute("ALTER TABLE bookings ENABLE TRIGGER USER")
    found = check(database_url)
    assert len(found["oversold_slots"]) == 1
    assert str(slot) in found["oversold_slots"][0]
    truncate_all(database_url)


def test_gate_reads_locust_stats_csv(tmp_path: Path) -> None:
    cols = ["Type", "Name", "Request Count", "Failure Count", "Median Response Time",
            "Average Response Time", "Min Response Time", "Max Response Time",
            "Average Content Size", "Requests/s", "Failures/s", "50%", "66%", "75%", "80%",
            "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"]  # fmt: skip
    rows = [
        ["GET", "/api/v1/search/tutors", 400, 0, 8, 9, 2, 90, 5000, 20, 0, 8, 9, 10, 11, 14, 31, 40, 50, 80, 90, 90],
        ["GET", "/api/v1/search/tutors/map", 400, 0, 5, 6, 2, 40, 3000, 20, 0, 5, 6, 7, 8, 10, 12, 15, 20, 30, 40, 40],
        ["GET", "/api/v1/search/coaches", 100, 0, 5, 6, 2, 40, 3000, 5, 0, 5, 6, 7, 8, 10, 12, 15, 20, 30, 40, 40],
        ["", "Aggregated", 900, 0, 6, 7, 2, 90, 4000, 45, 0, 6, 7, 8, 9, 12, 20, 30, 45, 80, 90, 90],
    ]  # fmt: skip
    csv_path = tmp_path / "run_stats.csv"
    csv_path.write_text("\n".join(",".join(map(str, r)) for r in [cols, *rows]) + "\n")
    r = gate(str(csv_path))
    assert r.returncode == 1
    assert "GET /api/v1/search/tutors p95 31 ms > 25 ms" in r.stdout
    assert gate(str(tmp_path / "run")).returncode == 1  # the --csv prefix works too
    assert gate(str(tmp_path / "missing.json")).returncode == 2


def test_viewport_moves_like_a_web_map() -> None:
    from loadtests.viewport import Viewport

    v = Viewport.around(48.8566, 2.3522, 12)
    min_lng, min_lat, max_lng, max_lat = v.bbox()
    assert min_lng < 2.3522 < max_lng
    assert min_lat < 48.8566 < max_lat
    width = max_lng - min_lng
    assert width == pytest.approx(1280 / 256 * 360 / 2**12, rel=1e-6)
    v.pan(v.width, 0)  # one screen east: the old east edge is the new west edge
    assert v.bbox()[0] == pytest.approx(max_lng, abs=1e-6)
    v.zoom_by(+1)
    assert v.bbox()[2] - v.bbox()[0] == pytest.approx(width / 2, abs=2e-6)
    assert float(v.cx).is_integer()
    assert float(v.cy).is_integer()


# ---------------------------------------------------------------- a tiny real load


@pytest.fixture(scope="module")
def small_marketplace(database_url: str) -> Any:
    """A small seeded marketplace with its search documents (emptied afterwards)."""
    from devdata.seed import SeedParams, seed
    from indexer.projection import build_all

    truncate_all(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # slots from tomorrow: the students book inside the availability window (28 days)
        start = date.today() + timedelta(days=1)
        seed(conn, SeedParams(tutors=400, coaches=150, students=5, seed=5, start=start))
        with conn.transaction():
            build_all(conn)
    yield database_url
    truncate_all(database_url)


def test_gate_passes_on_a_tiny_real_load(
    small_marketplace: str, redis_url: str, tmp_path: Path
) -> None:
    """13 Locust users (4 map, 4 list, 2 coach, 1 provider, 1 student who books and pays,
    1 webhook sender) for 8 s against the real stack (API, indexer, worker, Stripe
    stand-in) over the seeded test database; no oversold slot, a balanced ledger, and the
    gate passes the CI SLOs."""
    from loadtests import invariants
    from loadtests.plot import plot_history
    from loadtests.run import payments_env
    from loadtests.stack import Stack, run_locust

    port = free_port()
    stack_env, pay_env = payments_env(port)
    stack_env["STRIPE_STANDIN_PORT"] = str(free_port())
    stack_env["STRIPE_STANDIN_URL"] = f"http://127.0.0.1:{stack_env['STRIPE_STANDIN_PORT']}"
    pay_env["LOCUST_STRIPE_STANDIN_URL"] = stack_env["STRIPE_STANDIN_URL"]
    stack = Stack(
        port=port,
        workers=1,
        indexer_metrics_port=free_port(),
        log_path=tmp_path / "stack.log",
        env={"DATABASE_URL": small_marketplace, "REDIS_URL": redis_url, **stack_env,
             "WORKER_METRICS_PORT": "0"},
    )  # fmt: skip
    with stack:
        path = run_locust(
            stack.url, tmp_path, users=13, spawn_rate=13, duration="8s", wait_scale=0.3,
            env={"LOCUST_DATABASE_URL": small_marketplace, **pay_env}, quiet=True,
        )  # fmt: skip
    data = json.loads(path.read_text())
    data["invariants"] = invariants.check(small_marketplace)
    path.write_text(json.dumps(data))
    assert not any(data["invariants"].values()), data["invariants"]
    keys = {e["key"]: e for e in data["endpoints"]}
    for name in SEARCH:
        assert keys[f"GET {name}"]["requests"] > 0
    writes = ("PATCH /api/v1/profiles/me", "POST /api/v1/availability")
    assert keys["POST /api/v1/auth/login"]["requests"] >= 1
    assert sum(keys.get(k, {}).get("requests", 0) for k in writes) > 0  # on_stop PATCHes too
    assert keys["POST /api/v1/bookings"]["requests"] > 0
    assert keys["JOURNEY hold -> confirmed"]["requests"] > 0, (tmp_path / "stack.log").read_text()[
        -3000:
    ]
    assert data["run"]["places_source"] == "database"
    assert data["run"]["provider_accounts"] > 0
    cache = data["cache"]["responses"]
    assert sum(v["hit"] + v["miss"] for v in cache.values()) == sum(
        keys[f"GET {n}"]["requests"] - keys[f"GET {n}"]["failures"] for n in SEARCH
    )
    assert data["cache"]["metrics"] is not None  # /metrics was scraped before and after
    assert plot_history(tmp_path / "locust_stats_history.csv", tmp_path)
    assert (tmp_path / "steps.png").exists()
    assert (tmp_path / "report.html").exists()
    r = gate(str(path), "--slo", str(CI_SLO))
    assert r.returncode == 0, r.stdout
    assert "SLO gate passed" in r.stdout


def test_wrk_phase_rotates_the_mix_and_reports_errors() -> None:
    """The cache-off HTTP phase's wrk script (Lua) runs, walks the URL mix from a different
    place in each thread, and reports percentiles, throughput and non-2xx answers."""
    import shutil
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from loadtests.bench_search import wrk_bench, wrk_urls

    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed")
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(self.path)
            status = 404 if self.path.startswith("/api/v1/search/coaches") else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = wrk_bench(wrk, f"http://127.0.0.1:{server.server_port}", 4, 1, 2)
    finally:
        server.shutdown()
        server.server_close()
    urls = wrk_urls(2)
    assert res["urls"] == len(urls) == 36
    assert res["n"] > 0
    assert res["req_per_s"] > 0
    assert 0 < res["errors"] < res["n"]  # the coach URLs answered 404
    assert 0 <= res["p50"] <= res["p95"] <= res["p99"]
    assert "closed loop" in res["client"]
    assert set(seen) <= set(urls)
    assert len(set(seen)) == len(set(urls))  # the whole mix in one second, no URL left out
