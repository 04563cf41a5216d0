"""`educonnect demo journey` against a running stack: the API, a Celery worker, the
streaming indexer and the live-seat relay as subprocesses, the Stripe stand-in sending
signed webhooks and the LiveKit stand-in (like the
payments tests). The command must print every step and exit 0; a stack missing its worker
must make it exit 1 at the confirmation step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import DEFAULT_PASSWORD, create_user, truncate_all
from tests.payments.kit import Process, Stack, served, start_worker, unbalanced
from tests.sessions.livekit_standin import API_KEY as LIVEKIT_KEY
from tests.sessions.livekit_standin import API_SECRET as LIVEKIT_SECRET
from tests.sessions.livekit_standin import start_standin as start_livekit
from tests.sessions.livekit_standin import stop_standin as stop_livekit

pytestmark = pytest.mark.slow

ADMIN = "demo-admin@example.com"

STEPS = (
    "API ready", "tutor signs up", "tutor publishes a profile", "tutor adds a group class",
    "tutor uploads a KYC document", "admin verifies the tutor", "student finds the tutor (search)", "student opens the profile", "student reads the reviews", "student sees the slots",
    "student signs up", "student holds 2 seats", "seats left drop while held",
    "live seats (SSE)", "payment intent", "payment (stand-in succeeds it)",
    "confirmed by the webhook", "video session token", "refund shown before cancel",
)  # fmt: skip


@pytest.fixture(scope="module")
def stack(database_url: str) -> Iterator[Stack]:
    truncate_all(database_url)
    with psycopg.connect(database_url, autocommit=True) as db:
        create_user(db, role="admin", email=ADMIN)
    livekit = start_livekit()
    keys = {
        "LIVEKIT_URL": livekit.url,
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
    }
    try:
        with served(database_url, extra_env=keys, worker=False) as stack:
            indexer = Process([sys.executable, "-m", "cli", "indexer", "run"], stack.env)
            live = Process(
                [sys.executable, "-m", "cli", "notifications", "relay", "--consumer", "live"],
                stack.env,
            )
            try:
                yield stack
            finally:
                live.stop()
                indexer.stop()
    finally:
        stop_livekit(livekit)
        with psycopg.connect(database_url) as db:
            assert unbalanced(db) == []
        truncate_all(database_url)


def _demo(stack: Stack, wait_s: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "cli",
            "demo",
            "journey",
            "--api",
            stack.url,
            "--wait-s",
            wait_s,
            "--admin-email",
            ADMIN,
            "--admin-password",
            DEFAULT_PASSWORD,
        ],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_without_a_worker_the_journey_fails_at_the_confirmation(stack: Stack) -> None:
    """No worker: the webhook is stored but never processed, the booking stays pending."""
    done = _demo(stack, "3")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ok  payment (stand-in succeeds it)" in done.stdout
    assert "FAIL confirmed by the webhook" in done.stderr
    assert "is the worker running?" in done.stderr


def test_the_demo_journey_passes_on_a_running_stack(stack: Stack) -> None:
    worker = start_worker(stack.env)
    try:
        done = _demo(stack, "60")
    finally:
        worker.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("  ok  ")]
    assert [line[6:40].strip() for line in lines] == list(STEPS)
    for line in lines:
        assert re.search(r"\s\d+\.\d ms  ", line), line  # every step has its latency
    assert "hold -> confirmed in" in done.stdout
    assert "seat.held, seats_left 1 (SSE)" in done.stdout
    assert "too early: the room opens at" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith(f"journey complete: {len(STEPS)} steps")
