"""The notifications benchmark's tiny run: the real processes (both relays, the API, a
Celery worker) on a scratch database, an SMTP sink, SSE clients; figures written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_bench_notifications_smoke(database_url: str, redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.bench_notifications", "--smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["fan_out"]["emails"] == 40
    assert result["fan_out"]["events_per_s"] > 0
    sse = result["sse"]
    assert sse["deliveries"] == sse["deliveries_expected"] == 30
    assert sse["latency_ms"]["p95"] > 0
    assert result["machine"]["cores"] >= 1
    assert "fan-out: 20 events" in proc.stdout
