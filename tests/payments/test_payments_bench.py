"""The payments benchmark at tiny scale (it must keep running; figures are not checked)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_bench_payments_smoke(database_url: str, tmp_path: object) -> None:
    from pathlib import Path

    from loadtests.bench_payments import main

    out = Path(str(tmp_path)) / "bench.json"
    report = main(
        ["--events", "40", "--ingest-client", "aiohttp", "--payments", "8", "--intents", "8", "--rate", "20",
         "--concurrency", "4", "--api-workers", "1", "--worker-concurrency", "1",
         "--standin-latency-ms", "5", "--out", str(out)]
    )  # fmt: skip
    assert out.exists()
    assert report["ingest"]["stored"] == 40
    assert report["ingest"]["errors"] == 0
    assert report["commit_to_confirmed"]["confirmed"] == 8
    # where each payment's time went, from the database's timestamps: every stage counted
    stages = report["commit_to_confirmed"]["stages_ms"]
    assert {k: v["n"] for k, v in stages.items()} == {
        "commit_to_stored": 8, "stored_to_processed": 8, "processed_to_seen": 8,
    }  # fmt: skip
    assert report["commit_to_confirmed"]["succeed_call_ms"]["n"] == 8
    assert report["intent_creation"]["errors"] == 0
    assert report["intent_creation"]["standin_server_ms"]["n"] == 8
    assert report["machine"]["cores"] >= 1
    # the CPU per unit of work of the server's processes, apart from the generator's
    for phase, key in (
        ("ingest", "cpu_ms_per_event"),
        ("commit_to_confirmed", "cpu_ms_per_confirmation"),
        ("intent_creation", "cpu_ms_per_intent"),
    ):
        assert {"api", "postgres", "standin", "client"} <= set(report[phase][key])
    assert report["commit_to_confirmed"]["cpu_ms_per_confirmation"]["worker"] > 0
    assert report["intent_creation"]["cpu_ms_per_intent"]["api"] > 0
