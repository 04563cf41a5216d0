"""`make bench-booking` at a tiny scale: the script runs end to end against a real API
and database and its invariants hold (no 5xx, the contention class sold exactly, never
oversold, counters exact). Its timings are not asserted: this machine is shared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_bench_booking_smoke_run_keeps_its_invariants(database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench-booking.json"
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_booking", "--smoke", "--port", str(free_port()),
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["invariants"] == {
        "no_5xx": True,
        "contention_sold_exactly_the_seats": True,
        "contention_all_answered": True,
        "never_oversold": True,
        "counters_exact": True,
    }
    statuses = report["contention"]["statuses"]
    assert statuses["201"] == 5
    assert set(statuses) <= {"201", "409 sold_out", "429 slot_busy"}  # a busy slot says retry
    assert report["open_loop"]["statuses"] == {"201": 40}
    assert report["machine"]["cores"] >= 1
    assert "open loop" in run.stdout
    assert "contention" in run.stdout
