"""Schemathesis over the OpenAPI of the reviews and back-office routes: generated
requests (valid and invalid) must never get a 500, and every status they get must be
documented on the route (`responses=problem_responses(...)`). Real database and Redis;
requests carry an admin's bearer token (the student-only routes then answer their
documented 403)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.conftest import bearer, create_user

ROUTES = (
    r"^/api/v1/(reviews/|providers/[^/]+/reviews|bookings/[^/]+/(review|evaluation|evaluations"
    r"|complaints)$|profiles/me/kyc-documents|admin/(users|reviews|kyc|bookings|complaints|audit))"
)


@pytest.fixture
def api_schema(db: psycopg.Connection[Any]) -> Any:
    from api.app import create_app

    return schemathesis.openapi.from_asgi("/openapi.json", create_app()).include(path_regex=ROUTES)


@pytest.fixture
def admin_headers(db: psycopg.Connection[Any]) -> dict[str, str]:
    return bearer(create_user(db, role="admin"), "admin")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_error_and_only_documented_statuses(
    case: Any, admin_headers: dict[str, str]
) -> None:
    case.call_and_validate(
        headers=admin_headers, checks=[not_a_server_error, status_code_conformance]
    )
