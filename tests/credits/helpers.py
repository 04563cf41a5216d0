"""Factories of the credits tests: plans, grants (a wallet's credits), slots to book."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tests.booking.helpers import NOW


def create_plan(
    db: psycopg.Connection[Any],
    *,
    code: str = "HYBRIDE",
    kind: str = "plan",
    credits: int = 4,
    prices: dict[str, int] | None = None,
) -> uuid.UUID:
    """A plan (monthly) or pack with its prices (default 9,900 EUR minor units), in place
    of the migration's entry of the same code (still there before the first truncation)."""
    db.execute("DELETE FROM credit_plans WHERE code = %s", (code,))
    row = db.execute(
        "INSERT INTO credit_plans (code, kind, name, credits, billing_interval)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (code, kind, code.title(), credits, "month" if kind == "plan" else None),
    ).fetchone()
    assert row is not None
    for currency, amount in (prices or {"EUR": 9900}).items():
        db.execute(
            "INSERT INTO credit_plan_prices (plan_id, currency, amount_minor) VALUES (%s, %s, %s)",
            (row[0], currency, amount),
        )
    return uuid.UUID(str(row[0]))


def default_costs(db: psycopg.Connection[Any]) -> None:
    """The migration's default cost table (the tables are emptied between tests)."""
    db.execute("DELETE FROM credit_costs")
    db.execute(
        "INSERT INTO credit_costs (service_type, max_minutes, credits) VALUES"
        " ('online', 60, 1), ('online', 120, 2), ('in_person', 60, 1), ('group', 90, 1)"
    )


def grant(
    db: psycopg.Connection[Any],
    owner: Any,
    credits: int,
    *,
    expires_at: datetime,
    value_minor: int | None = None,
    granted_at: datetime = NOW - timedelta(days=1),
    currency: str = "EUR",
) -> uuid.UUID:
    """Credits in `owner`'s wallet (a PURCHASE worth 2,500 a credit by default)."""
    row = db.execute(
        "INSERT INTO credit_grants (owner_id, type, credits, remaining, value_minor, currency,"
        " granted_at, expires_at, source_key) VALUES (%s, 'PURCHASE', %s, %s, %s, %s, %s, %s,"
        " %s) RETURNING id",
        (owner, credits, credits, 2500 * credits if value_minor is None else value_minor,
         currency, granted_at, expires_at, f"test:{uuid.uuid4()}"),
    ).fetchone()  # fmt: skip
    assert row is not None
    return uuid.UUID(str(row[0]))


def remaining(db: psycopg.Connection[Any], grant_id: Any) -> int:
    row = db.execute("SELECT remaining FROM credit_grants WHERE id = %s", (grant_id,)).fetchone()
    assert row is not None
    return int(row[0])


def liability(db: psycopg.Connection[Any], currency: str = "EUR") -> int:
    """The ledger's `credits:liability` balance."""
    row = db.execute(
        "SELECT coalesce(sum(amount_minor), 0) FROM ledger_entries"
        " WHERE account = 'credits:liability' AND currency = %s",
        (currency,),
    ).fetchone()
    assert row is not None
    return int(row[0])
