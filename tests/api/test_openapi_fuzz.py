"""Schemathesis over the whole OpenAPI document (`/openapi.json`) of a live API.

The API runs in a uvicorn subprocess on the test database and Redis (search cache off, so
every search reaches the engine) over a small seeded marketplace. Every operation goes
through the examples, coverage and fuzzing phases (positive and negative inputs), once
per role — a student, a tutor with a profile, an admin — each with a bearer token from
`POST /auth/login`. Each response must pass four checks: no 5xx, a status code the
operation documents, a `Content-Type` it documents, and a body that conforms to the
documented schema. Generation is deterministic (fixed seed, derandomized, no example
database) and bounded (`MAX_EXAMPLES` per operation and phase), so a CI run is stable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from schemathesis import checks as st_checks

from api.app import create_app
from tests.conftest import DEFAULT_PASSWORD, TEST_REDIS_URL, create_user, free_port, truncate_all

MAX_EXAMPLES = 5
SEED = 20301
CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]
CONFIG: dict[str, Any] = {
    "seed": SEED,
    "generation": {
        "mode": "all",
        "max-examples": MAX_EXAMPLES,
        "deterministic": True,
        "database": "none",
    },
    "phases": {
        "examples": {"enabled": True},
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
}


@pytest.fixture(scope="module")
def live_api(database_url: str) -> Iterator[str]:
    """A uvicorn process serving the API on a seeded marketplace; its base URL."""
    from devdata.seed import SeedParams, seed
    from indexer.projection import build_all

    truncate_all(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        seed(conn, SeedParams(tutors=60, coaches=20, students=0, seed=3, start=date(2030, 3, 4)))
        with conn.transaction():
            build_all(conn)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": TEST_REDIS_URL,
        "SEARCH_CACHE_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"uvicorn exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("uvicorn did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        truncate_all(database_url)


def _login(base: str, email: str) -> str:
    r = httpx.post(
        base + "/api/v1/auth/login", data={"username": email, "password": DEFAULT_PASSWORD}
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


@pytest.fixture(scope="module")
def tokens(live_api: str, database_url: str) -> dict[str, str]:
    """A bearer token per role, from the API's own login: the student signs up through
    the API; the tutor (with a profile) and the admin are inserted (no sign-up offers
    admin) and log in."""
    r = httpx.post(
        live_api + "/api/v1/auth/register",
        json={"email": "fuzz-student@example.com", "password": DEFAULT_PASSWORD,
              "full_name": "Fuzz Student", "role": "student"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    out = {"student": _login(live_api, "fuzz-student@example.com")}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in ("tutor", "admin"):
            create_user(conn, role=role, email=f"fuzz-{role}@example.com")
        out["tutor"] = _login(live_api, "fuzz-tutor@example.com")
        out["admin"] = _login(live_api, "fuzz-admin@example.com")
    profile = {
        "display_name": "Fuzz Tutor", "subjects": ["mathematics"], "languages": ["fr"],
        "hourly_rate_minor": 3000, "currency": "EUR", "online": True,
    }  # fmt: skip
    r = httpx.put(
        live_api + "/api/v1/profiles/me",
        json=profile,
        headers={"Authorization": f"Bearer {out['tutor']}"},
    )
    assert r.status_code == 200, r.text
    return out


# Loaded at import from the app factory (no server needed to collect one test per
# operation); `test_the_live_api_serves_this_document` checks the server serves the same.
SPEC = create_app().openapi()
schema = schemathesis.openapi.from_dict(SPEC, config=schemathesis.Config.from_dict(CONFIG))


def test_the_live_api_serves_this_document(live_api: str) -> None:
    assert httpx.get(live_api + "/openapi.json").json() == SPEC


@pytest.mark.slow
@pytest.mark.parametrize("role", ["student", "tutor", "admin"])
@schema.parametrize()
def test_every_operation_answers_as_documented(
    case: schemathesis.Case, role: str, live_api: str, tokens: dict[str, str]
) -> None:
    case.call_and_validate(
        base_url=live_api,
        headers={"Authorization": f"Bearer {tokens[role]}"},
        checks=CHECKS,
        timeout=30,
    )
