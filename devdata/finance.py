"""Paid and refunded demo bookings for the seed, so the admin finance report
(`GET /api/v1/admin/reports/finance`) has gross, refunds, commission and earnings to show.

`seed_bookings` runs inside the seed's transaction on its psycopg connection. It picks
slots deterministically (ordered by their seeded ids; the draws come from a
`random.Random` of its own, so the rest of the seed does not move) and writes, per booking:

- a `bookings` row, `confirmed` (paid) or `refunded` (canceled by the student ≥ 24 h
  before the start: 100 %, or ≥ 2 h: 50 % under the platform policy);
- its `payments` row, `succeeded`, captured in full, with a fake but well-formed
  PaymentIntent id marked as seed (`pi_seed…`, never sent to Stripe);
- for a refunded booking, a `succeeded` refund row (`re_seed…`, key `re:{booking}:1`'s
  sequence 1, reason `booking_canceled`); the `refunds_reserve` trigger books it on the
  payment's `refunded_minor`;
- the ledger transactions `payment:{payment_id}` and `refund:{refund_id}`, built by
  `payments.ledger` (the same split and allocation as real payments) and posted by
  `payments.service.post_ledger` — the payments domain's own posting function, so the
  rows are exactly those a real payment writes and each transaction balances (the
  database trigger checks it at commit).

Amounts are minor units of the provider's currency: price = hourly rate x minutes / 60,
plus the service fee (`payments.ledger.service_fee`, as a real intent: `SERVICE_FEE_BPS` of
the price plus the currency's `SERVICE_FEE_MINOR`, rounded down to what Stripe moves); commission = `PLATFORM_FEE_BPS` of the price.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from booking.schemas import PLATFORM_POLICY
from core.settings import get_settings
from payments import ledger
from payments import service as payments
from payments.stripe_adapter import stripe_round_down

GATEWAY = "stripe"
MAX_BOOKINGS = 300  # "a few hundred at most": the seed stays fast
REFUNDED_SHARE = 0.25  # of the seeded bookings, canceled and refunded
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SeededMoney:
    """What `seed_bookings` wrote: bookings (confirmed + refunded), payments, refunds and
    ledger transactions."""

    confirmed: int
    refunded: int
    payments: int
    refunds: int
    ledger_transactions: int


class _Result:
    """The part of a SQLAlchemy result `payments.repository.post` reads."""

    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows = rows

    def scalar_one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise ValueError("more than one row")
        return self.rows[0][0] if self.rows else None


class _PsycopgSession:
    """Just enough of an `AsyncSession` for the payments domain's ledger posting to run
    on the seed's psycopg connection, inside its transaction: `execute` compiles the
    SQLAlchemy statement for psycopg and runs it at once (a list of parameter sets is an
    executemany). Nothing here suspends, so `_run` drives the coroutines synchronously."""

    _dialect: Any = pg_psycopg.dialect()  # type: ignore[no-untyped-call]

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    async def execute(
        self, statement: Any, params: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> _Result:
        if isinstance(params, list):
            compiled = statement.compile(dialect=self._dialect, column_keys=list(params[0]))
            with self.conn.cursor() as cur:
                cur.executemany(str(compiled), [compiled.construct_params(p) for p in params])
            return _Result([])
        compiled = statement.compile(dialect=self._dialect)
        cur = self.conn.execute(str(compiled), compiled.construct_params(params or {}))
        return _Result(cur.fetchall() if cur.description else [])


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine that never suspends (its awaits are `_PsycopgSession` calls)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(_T, done.value)
    coro.close()
    raise RuntimeError("the ledger posting suspended: not a synchronous session")


def _stripe_id(prefix: str, of: uuid.UUID) -> str:
    """A well-formed Stripe-style id marked as seed: `{prefix}_seed` + 24 hex digits."""
    return f"{prefix}_seed{of.hex[:24]}"


def seed_bookings(
    conn: psycopg.Connection[Any], *, seed: int, students: Sequence[uuid.UUID], now: datetime
) -> SeededMoney:
    """Write up to `MAX_BOOKINGS` paid bookings (a quarter of them canceled and refunded)
    of the seeded slots, with their payments, refunds and balanced ledger transactions
    (see the module). Deterministic for `seed` and the seeded rows (ids, amounts,
    statuses); timestamps are `now`. One booking per 1:1 slot, a student never booked
    twice at overlapping times. Returns the counts; none without students."""
    if not students:
        return SeededMoney(0, 0, 0, 0, 0)
    rng = random.Random(f"money:{seed}")
    settings = get_settings()
    bps = settings.platform_fee_bps
    slots = conn.execute(
        "SELECT s.id, s.provider_id, s.starts_at, s.ends_at, p.hourly_rate_minor,"
        " p.currency::text FROM availability_slots s"
        " JOIN provider_profiles p ON p.user_id = s.provider_id"
        " WHERE s.capacity = 1 AND p.hourly_rate_minor > 0 ORDER BY s.id LIMIT %s",
        (MAX_BOOKINGS,),
    ).fetchall()
    busy: dict[uuid.UUID, list[tuple[datetime, datetime]]] = {}
    session = cast(AsyncSession, _PsycopgSession(conn))
    policy = Jsonb({"source": "platform", **PLATFORM_POLICY.model_dump(mode="json")})
    confirmed = refunded = txns = 0
    for slot_id, provider_id, starts, ends, rate, currency in slots:
        student = None
        for _ in range(8):  # a student free at that time (the exclusion constraint)
            pick = students[rng.randrange(len(students))]
            if all(ends <= s or starts >= e for s, e in busy.get(pick, [])):
                student = pick
                break
        if student is None:
            continue
        minutes = int((ends - starts).total_seconds() // 60)
        price = max(1, rate * minutes // 60)
        refund_percent = rng.choice((100, 50)) if rng.random() < REFUNDED_SHARE else None
        booking_id, payment_id = (
            uuid.UUID(int=rng.getrandbits(128), version=4),
            uuid.UUID(int=rng.getrandbits(128), version=4),
        )
        refund_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        due = None if refund_percent is None else price * refund_percent // 100
        conn.execute(
            "INSERT INTO bookings (id, student_id, booked_by, provider_id, slot_id, seats,"
            " starts_at, ends_at, status, hold_expires_at, price_minor, currency, cancel_policy,"
            " canceled_at, canceled_by, canceled_by_role, cancel_reason, refund_due_minor,"
            " confirmed_at) VALUES (%s, %s, %s, %s, %s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " %s, %s, %s, %s)",
            (
                booking_id, student, student, provider_id, slot_id, starts, ends,
                "confirmed" if due is None else "refunded", now + timedelta(minutes=15), price,
                currency, policy, None if due is None else now, None if due is None else student,
                None if due is None else "student", None if due is None else "seed: plans changed",
                due, now,
            ),
        )  # fmt: skip
        if due is None:
            busy.setdefault(student, []).append((starts, ends))
        fee = stripe_round_down(
            ledger.service_fee(
                price_minor=price, currency=currency, bps=settings.service_fee_bps,
                fixed=settings.service_fee_minor,
            ),
            currency,
        )  # fmt: skip
        amount = price + fee
        conn.execute(
            "INSERT INTO payments (id, booking_id, payer_id, provider_id, gateway, gateway_ref,"
            " status, price_minor, service_fee_minor, amount_minor, currency, captured_minor,"
            " succeeded_at) VALUES (%s, %s, %s, %s, %s, %s, 'succeeded', %s, %s, %s, %s, %s, %s)",
            (
                payment_id, booking_id, student, provider_id, GATEWAY,
                _stripe_id("pi", payment_id), price, fee, amount, currency, amount, now,
            ),
        )  # fmt: skip
        parts = ledger.split(price_minor=price, service_fee_minor=fee, bps=bps)
        posted = _run(
            payments.post_ledger(
                session, kind="payment", key=f"payment:{payment_id}", currency=currency,
                lines=ledger.payment_lines(gateway=GATEWAY, provider_id=provider_id, parts=parts),
                booking_id=booking_id, payment_id=payment_id,
            )
        )  # fmt: skip
        txns += posted is not None
        if not due:
            confirmed += due is None
            refunded += due is not None
            continue
        conn.execute(
            "INSERT INTO refunds (id, payment_id, booking_id, seq, gateway_ref, amount_minor,"
            " currency, status, reason) VALUES (%s, %s, %s, 1, %s, %s, %s, 'succeeded',"
            " 'booking_canceled')",
            (refund_id, payment_id, booking_id, _stripe_id("re", refund_id), due, currency),
        )
        posted = _run(
            payments.post_ledger(
                session, kind="refund", key=f"refund:{refund_id}", currency=currency,
                lines=ledger.refund_lines(
                    gateway=GATEWAY, provider_id=provider_id, parts=parts, refunded_before=0,
                    amount=due,
                ),
                booking_id=booking_id, payment_id=payment_id, refund_id=refund_id,
            )
        )  # fmt: skip
        txns += posted is not None
        refunded += 1
    n_refunds = conn.execute("SELECT count(*) FROM refunds").fetchone()
    return SeededMoney(
        confirmed=confirmed,
        refunded=refunded,
        payments=confirmed + refunded,
        refunds=int(n_refunds[0]) if n_refunds else 0,
        ledger_transactions=txns,
    )
