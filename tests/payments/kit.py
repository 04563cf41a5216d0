"""Helpers of the payments tests: the Stripe stand-in on a free port, the API and a Celery
worker as real subprocesses, signed webhook deliveries, bounded polling, and the ledger
invariants every payments test ends with."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import stripe

from standins.stripe import StandinHTTPServer, start
from tests.conftest import TEST_REDIS_URL, free_port, settings_env, wait_for

WEBHOOK_SECRET = "whsec_test_" + "payments"
API_KEY = "sk_test_payments"
WEBHOOK_PATH = "/api/v1/payments/webhooks/stripe"


def stripe_env(standin_url: str, database_url: str) -> dict[str, str]:
    """The environment pointing our code at the test database, Redis and the stand-in."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": TEST_REDIS_URL,
        "STRIPE_SECRET_KEY": "",
        "STRIPE_STANDIN_URL": standin_url,
        "STRIPE_STANDIN_API_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        "PAYMENTS_TASK_RETRY_S": "0.2",
        "WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }


def start_standin(**options: Any) -> StandinHTTPServer:
    """A stand-in on a free port with the tests' key and webhook secret."""
    server, _ = start(api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, **options)
    return server


class Process:
    """A subprocess whose output goes to a temporary file (shown when it fails)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="paytest-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()[-6000:]

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"process exited: {self.output()}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()
        if os.environ.get("PAYMENTS_TEST_KEEP_LOGS"):
            print(f"[payments tests] log kept: {self.log.name}")
        else:
            os.unlink(self.log.name)


def start_api(env: dict[str, str]) -> tuple[Process, str]:
    """`educonnect serve` on a free port; returns the process and its base URL once
    `/healthz` answers."""
    port = free_port()
    proc = Process(
        [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        proc.alive()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, "the API to answer /healthz", 60)
    return proc, url


def start_worker(env: dict[str, str]) -> Process:
    """A Celery worker (solo pool) on the test Redis; returns once it answers ping."""
    from core.celery_app import app

    name = f"payments-test-{uuid.uuid4().hex[:8]}@localhost"
    proc = Process(
        [
            sys.executable, "-m", "celery", "-A", "core.celery_app", "worker", "--pool=solo",
            "--without-gossip", "--without-mingle", "-n", name, "--loglevel=WARNING",
        ],
        env,
    )  # fmt: skip
    wait_for(
        lambda: proc.alive() and bool(app.control.ping(destination=[name], timeout=0.5)),
        "the Celery worker to answer ping",
        60,
    )
    return proc


def unbalanced(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Ledger transactions (per currency) and currencies whose lines do not sum to zero."""
    per_txn = conn.execute(
        "SELECT txn_id::text, currency, sum(amount_minor) FROM ledger_entries"
        " GROUP BY txn_id, currency HAVING sum(amount_minor) <> 0"
    ).fetchall()
    per_currency = conn.execute(
        "SELECT 'all', currency, sum(amount_minor) FROM ledger_entries"
        " GROUP BY currency HAVING sum(amount_minor) <> 0"
    ).fetchall()
    return [*per_txn, *per_currency]


class Stack:
    """The stand-in (thread), the API and a worker (subprocesses) on the test services;
    `env` the environment they run with."""

    def __init__(
        self,
        standin: StandinHTTPServer,
        api: Process,
        api_url: str,
        worker: Process | None,
        env: dict[str, str],
    ):
        self.standin = standin
        self.api_proc = api
        self.url = api_url
        self.worker = worker
        self.env = env
        self.http = httpx.Client(base_url=api_url, timeout=30)
        self.sdk = stripe.StripeClient(API_KEY, base_addresses={"api": standin.url})

    def events(self, type_: str) -> list[dict[str, Any]]:
        """The stand-in's events of one type (`customer.subscription.updated`, …)."""
        with self.standin.standin.lock:
            return [e for e in self.standin.standin.events.values() if e["type"] == type_]

    def intents_of(self, booking_id: Any) -> list[dict[str, Any]]:
        """The stand-in's PaymentIntents whose metadata names `booking_id`."""
        with self.standin.standin.lock:
            return [
                i for i in self.standin.standin.intents.values()
                if i["metadata"].get("booking_id") == str(booking_id)
            ]  # fmt: skip


@contextmanager
def standin_running(**options: Any) -> Iterator[StandinHTTPServer]:
    """`start_standin(**options)`, closed and shut down on exit."""
    server = start_standin(**options)
    try:
        yield server
    finally:
        server.standin.close()
        server.shutdown()


@contextmanager
def served(
    database_url: str,
    *,
    extra_env: dict[str, str] | None = None,
    worker: bool = True,
    **standin_options: Any,
) -> Iterator[Stack]:
    """The stand-in (`standin_options`), the API and (with `worker`) a Celery worker on
    `database_url`, with `extra_env` on top of `stripe_env`; the stand-in delivers its
    signed webhooks to the API. Everything is stopped on exit."""
    with standin_running(**standin_options) as standin:
        env = {**stripe_env(standin.url, database_url), **(extra_env or {})}
        api, url = start_api(env)
        proc = None
        try:
            proc = start_worker(env) if worker else None
            standin.standin.webhook_url = url + WEBHOOK_PATH
            yield Stack(standin, api, url, proc, env)
        finally:
            if proc is not None:
                proc.stop()
            api.stop()


@contextmanager
def running_stack(database_url: str) -> Iterator[Stack]:
    """`served(database_url)`, with this process reading the same settings (the
    stand-in's address, the secret) while it runs; the environment is restored on exit."""
    with served(database_url) as stack, settings_env(stack.env):
        yield stack
