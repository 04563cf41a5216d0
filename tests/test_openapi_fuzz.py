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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.conftest import bearer, create_user

ROUTES = (
    r"^/api/v1/(reviews/|providers/[^/]+/reviews|bookings/[^/]+/(review|evaluation|evaluations"
    r"|complaints)$|profiles/me/kyc-documents|admin/(users|reviews|kyc|bookings|complaints|audit))"
)


@pytest.fixture
def admin_headers(db: psycopg.Connection[Any]) -> dict[str, str]:
    return bearer(create_user(db, role="admin"), "admin")


def test_no_server_error_and_only_documented_statuses(
    db: psycopg.Connection[Any], admin_headers: dict[str, str]
) -> None:
    """Every operation of the reviews and back-office routes, 25 generated cases each
    (valid and invalid)
    (hypothesis, schemathesis' strategies), checked for 5xx and undocumented statuses."""
    from api.app import create_app

    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app()).include(
        path_regex=ROUTES
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [o.label for o in operations]
    calls: list[str] = []
    for operation in operations:

        @given(
            case=st.one_of(
                operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            )
        )
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            calls.append(case.operation.label)
            case.call_and_validate(
                headers=admin_headers, checks=[not_a_server_error, status_code_conformance]
            )

        fuzz()
    assert len(set(calls)) == len(operations), sorted(set(calls))  # every one exercised
