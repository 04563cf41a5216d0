"""Reviews: every rule (completed only, one per booking, the 14-day window, the 48-hour
edit, one reply, hidden reviews excluded), the incremental rating against a recount
after random sequences of posts/edits/hides, and the damped rating moving a provider in
`sort=rating` search after one indexer batch."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import AppError
from indexer.projection import build_all
from indexer.relay import PostgresSink, Relay, RelayConfig
from reviews.service import damped_rating
from tests.booking.helpers import SLOT_START, link_child
from tests.conftest import TEST_REDIS_URL, bearer, create_provider, create_user
from tests.reviews.helpers import (
    AFTER,
    SESSION_END,
    completed_booking,
    rating,
    recount,
    set_prior,
    set_rating,
    tutor,
)


@pytest.fixture
def clock(app: Any) -> dict[str, Any]:
    """The app's clock, at AFTER unless a test moves it."""
    from api.deps import get_now

    state = {"now": AFTER}
    app.dependency_overrides[get_now] = lambda: state["now"]
    return state


def _drain(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        return Relay(conn, PostgresSink(), RelayConfig()).drain()


async def _post(
    api: httpx.AsyncClient, booking: Any, who: Any, role: str = "student", **body: Any
) -> httpx.Response:
    return await api.post(
        f"/api/v1/bookings/{booking}/review",
        headers=bearer(who, role),
        json={"rating": 5, "locale": "fr", **body},
    )


# --- the rules ------------------------------------------------------------------------------


async def test_a_completed_booking_is_reviewed_once_and_counts_at_once(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    booking, student = completed_booking(db, provider)
    r = await _post(api, booking, student, rating=4, comment="Très clair")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["rating"], body["comment"], body["locale"], body["source"]) == (
        4,
        "Très clair",
        "fr",
        "booking",
    )
    assert rating(db, provider) == (4, 1, 4.0)
    again = await _post(api, booking, student, rating=1)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["code"] == "review_exists"
    assert rating(db, provider) == (4, 1, 4.0)
    kinds = [r[0] for r in db.execute("SELECT event_type FROM outbox ORDER BY id")]
    assert kinds == ["provider.rating_changed", "review.posted"]
    payload = db.execute("SELECT payload FROM outbox WHERE event_type = 'review.posted'").fetchone()
    assert payload is not None
    assert set(payload[0]) == {"review_id", "provider_id", "booking_id"}  # keys only


@pytest.mark.parametrize("status", ["pending", "confirmed", "canceled", "no_show", "expired"])
async def test_only_a_completed_booking_is_reviewed(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any], status: str
) -> None:
    provider = tutor(db)
    booking, student = completed_booking(db, provider, status=status)
    r = await _post(api, booking, student)
    assert r.status_code == 409
    assert r.json()["code"] == "booking_not_completed"
    assert rating(db, provider) == (0, 0, None)


async def test_the_review_window_closes_fourteen_days_after_the_session(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    first, student = completed_booking(db, provider)
    second, _ = completed_booking(
        db, provider, student_id=student, start=SLOT_START + timedelta(hours=3)
    )
    clock["now"] = SESSION_END + timedelta(days=14)  # the last instant of the window
    assert (await _post(api, first, student)).status_code == 201
    clock["now"] = SESSION_END + timedelta(hours=3, days=14, microseconds=1)
    r = await _post(api, second, student)
    assert r.status_code == 409
    assert r.json()["code"] == "review_window_closed"


async def test_who_may_review(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    booking, student = completed_booking(db, provider)
    stranger = create_user(db)
    admin = create_user(db, role="admin")
    parent = create_user(db, role="parent")
    assert (await _post(api, booking, stranger)).status_code == 404
    assert (await _post(api, booking, provider, "tutor")).status_code == 403
    assert (await _post(api, booking, admin, "admin")).status_code == 403
    assert (await _post(api, booking, parent, "parent")).status_code == 404  # not its child
    link_child(db, parent, student)
    r = await _post(api, booking, parent, "parent", rating=3)
    assert r.status_code == 201
    assert rating(db, provider) == (3, 1, 3.0)


async def test_edit_within_48_hours_moves_the_sum_by_the_difference(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    set_rating(db, provider, stars=[5, 5])
    booking, student = completed_booking(db, provider)
    review = (await _post(api, booking, student, rating=2)).json()
    assert rating(db, provider) == (12, 3, 4.0)
    url = f"/api/v1/reviews/{review['id']}"
    clock["now"] = AFTER + timedelta(hours=48)
    r = await api.patch(url, headers=bearer(student, "student"), json={"rating": 4})
    assert r.status_code == 200, r.text
    assert rating(db, provider) == (14, 3, 4.67)
    other = create_user(db)
    assert (
        await api.patch(url, headers=bearer(other, "student"), json={"rating": 1})
    ).status_code == 403
    clock["now"] = AFTER + timedelta(hours=48, seconds=1)
    r = await api.patch(url, headers=bearer(student, "student"), json={"rating": 1})
    assert r.status_code == 409
    assert r.json()["code"] == "review_locked"
    assert rating(db, provider) == (14, 3, 4.67)


async def test_the_provider_answers_once(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    booking, student = completed_booking(db, provider)
    review = (await _post(api, booking, student)).json()
    url = f"/api/v1/reviews/{review['id']}/reply"
    other = tutor(db)
    assert (
        await api.post(url, headers=bearer(other, "tutor"), json={"text": "?"})
    ).status_code == 403
    assert (
        await api.post(url, headers=bearer(student, "student"), json={"text": "?"})
    ).status_code == 403
    r = await api.post(url, headers=bearer(provider, "tutor"), json={"text": "Merci !"})
    assert r.status_code == 200
    assert r.json()["reply"] == "Merci !"
    r = await api.post(url, headers=bearer(provider, "tutor"), json={"text": "Encore merci"})
    assert r.status_code == 409
    assert r.json()["code"] == "reply_exists"


async def test_hidden_reviews_leave_the_list_and_the_rating(
    api: httpx.AsyncClient, db: psycopg.Connection, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    admin = create_user(db, role="admin")
    ids = []
    for stars, hours in ((5, 0), (1, 3), (4, 6)):
        b, s = completed_booking(db, provider, start=SLOT_START + timedelta(hours=hours))
        clock["now"] = AFTER + timedelta(hours=hours)
        ids.append((await _post(api, b, s, rating=stars)).json()["id"])
    assert rating(db, provider) == (10, 3, 3.33)
    page = (await api.get(f"/api/v1/providers/{provider}/reviews")).json()
    assert [i["id"] for i in page["items"]] == ids[::-1]  # newest first
    assert page["rating"] == {"rating_avg": 3.33, "rating_count": 3,
                              "histogram": {"1": 1, "2": 0, "3": 0, "4": 1, "5": 1}}  # fmt: skip

    hide = f"/api/v1/admin/reviews/{ids[1]}/hide"
    r = await api.post(hide, headers=bearer(admin, "admin"), json={"reason": "insults"})
    assert r.status_code == 200
    assert r.json()["hidden"] is True
    assert rating(db, provider) == (9, 2, 4.5)
    assert recount(db, provider) == (9, 2)
    page = (await api.get(f"/api/v1/providers/{provider}/reviews")).json()
    assert [i["id"] for i in page["items"]] == [ids[2], ids[0]]
    assert page["rating"]["histogram"]["1"] == 0
    again = await api.post(hide, headers=bearer(admin, "admin"), json={"reason": "twice"})
    assert again.status_code == 409
    # filtered by stars, paged by cursor
    five = (await api.get(f"/api/v1/providers/{provider}/reviews", params={"rating": 5})).json()
    assert [i["id"] for i in five["items"]] == [ids[0]]
    first = (await api.get(f"/api/v1/providers/{provider}/reviews", params={"limit": 1})).json()
    rest = (
        await api.get(
            f"/api/v1/providers/{provider}/reviews",
            params={"limit": 1, "cursor": first["next_cursor"]},
        )
    ).json()
    assert [i["id"] for i in first["items"] + rest["items"]] == [ids[2], ids[0]]
    assert rest["next_cursor"] is None
    bad = await api.get(f"/api/v1/providers/{provider}/reviews", params={"cursor": "nope"})
    assert bad.status_code == 422


# --- the incremental rating equals a recount ---------------------------------------------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("post"), st.integers(0, 3), st.integers(1, 5)),
        st.tuples(st.just("edit"), st.integers(0, 3), st.integers(1, 5)),
        st.tuples(st.just("hide"), st.integers(0, 3), st.just(0)),
    ),
    max_size=14,
)


async def _run_ops(
    url: str,
    provider: Any,
    bookings: list[tuple[Any, Any]],
    admin: Any,
    ops: list[tuple[str, int, int]],
) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
    from sqlalchemy.pool import NullPool

    from core.settings import sqlalchemy_url
    from profiles.models import User
    from reviews import service
    from reviews.schemas import HideIn, ReviewIn, ReviewPatch

    engine = create_async_engine(sqlalchemy_url(url), poolclass=NullPool)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    reviews: dict[int, Any] = {}
    try:
        for op, i, stars in ops:
            booking, student = bookings[i]
            who = User(id=student, role="student", active=True)
            async with sessions() as s:
                try:
                    if op == "post":
                        out = await service.post_review(
                            s,
                            actor=who,
                            booking_id=booking,
                            data=ReviewIn(rating=stars, locale="en"),
                            now=AFTER,
                        )
                        reviews[i] = out.id
                    elif op == "edit" and i in reviews:
                        await service.edit_review(
                            s,
                            actor=who,
                            review_id=reviews[i],
                            data=ReviewPatch(rating=stars),
                            now=AFTER,
                        )
                    elif op == "hide" and i in reviews:
                        await service.hide(
                            s, actor=User(id=admin, role="admin", active=True), review_id=reviews[i],
                            data=HideIn(reason="test"), now=AFTER,
                        )  # fmt: skip
                    await s.commit()
                except AppError:
                    await s.rollback()
    finally:
        await engine.dispose()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_the_incremental_rating_equals_a_recount(
    db: psycopg.Connection, database_url: str, ops: list[tuple[str, int, int]]
) -> None:
    """Any sequence of posts (a second one of a booking refused), edits and hides leaves
    rating_sum/rating_count equal to a recount of the visible reviews, and rating_avg
    their rounded quotient; seeded reviews count from the start."""
    provider = tutor(db)
    set_rating(db, provider, stars=[4, 5, 3])
    admin = create_user(db, role="admin")
    bookings = [
        completed_booking(db, provider, start=SLOT_START + timedelta(hours=3 * k)) for k in range(4)
    ]
    asyncio.run(_run_ops(database_url, provider, bookings, admin, ops))
    total, count = recount(db, provider)
    assert rating(db, provider) == (
        total,
        count,
        None if count == 0 else float(round(Decimal(total) / count, 2)),
    )


# --- the damped rating in search -----------------------------------------------------------------


def test_the_damped_rating_follows_the_imdb_formula() -> None:
    # (v·R + m·C) / (v + m): one 5.0 review against two hundred at 4.9, C = 4.0, m = 10
    assert damped_rating(1, 5.0, mean=Decimal("4.0"), weight=10) == Decimal("4.09")
    assert damped_rating(200, 4.9, mean=Decimal("4.0"), weight=10) == Decimal("4.86")
    assert damped_rating(0, None, mean=Decimal("4.0"), weight=10) == Decimal("0.00")
    assert damped_rating(7, 3.5, mean=Decimal("4.2"), weight=0) == Decimal("3.50")


async def _rating_order(api: httpx.AsyncClient) -> list[str]:
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()  # no cached page
    r = await api.get("/api/v1/search/tutors", params={"sort": "rating", "limit": 50})
    assert r.status_code == 200, r.text
    return [i["id"] for i in r.json()["items"]]


async def test_one_five_star_review_no_longer_outranks_two_hundred_at_4_9(
    api: httpx.AsyncClient, db: psycopg.Connection, engines: Any
) -> None:
    one, many = tutor(db), tutor(db)
    set_rating(db, one, stars=[5])
    set_rating(db, many, stars=[5] * 180 + [4] * 20)  # 4.90
    set_prior(db, mean=4.0, weight=10)
    with db.transaction():
        build_all(db)
    assert await _rating_order(api) == [str(many), str(one)]
    # the displayed rating stays the plain average with its count
    items = (await api.get("/api/v1/search/tutors", params={"sort": "rating"})).json()["items"]
    assert [(i["rating"]["avg"], i["rating"]["count"]) for i in items] == [(4.9, 200), (5.0, 1)]
    # both PostgreSQL paths (blocks and SQL) and the OpenSearch documents agree
    from indexer.opensearch_documents import document, fetch_rows
    from search.schemas import TutorQuery

    et, sql = engines
    q = TutorQuery(sort="rating")
    assert [i["id"] for i in et.run(et.engine.search_tutors(q)).items] == [str(many), str(one)]
    assert [i["id"] for i in et.run(sql.search_tutors(q)).items] == [str(many), str(one)]
    docs = {str(r.provider_id): document(r) for r in fetch_rows(db, [one, many])}
    stored = dict(
        db.execute("SELECT provider_id::text, rating_sort FROM tutor_documents").fetchall()
    )
    assert {k: v["rating_sort"] for k, v in docs.items()} == {
        k: float(v) for k, v in stored.items()
    }
    assert stored == {str(one): Decimal("4.09"), str(many): Decimal("4.86")}


async def test_a_review_moves_the_provider_in_rating_search_after_one_batch(
    api: httpx.AsyncClient, db: psycopg.Connection, database_url: str, clock: dict[str, Any]
) -> None:
    low, high = tutor(db), tutor(db)
    set_rating(db, low, stars=[3])  # (3 + 4) / 2 = 3.50
    set_rating(db, high, stars=[3, 4])  # (7 + 4) / 3 = 3.67
    set_prior(db, mean=4.0, weight=1)
    with db.transaction():
        build_all(db)
    assert await _rating_order(api) == [str(high), str(low)]
    booking, student = completed_booking(db, low)
    assert (await _post(api, booking, student, rating=5)).status_code == 201  # (8 + 4) / 3 = 4.00
    assert await _rating_order(api) == [str(high), str(low)]  # not indexed yet
    assert _drain(database_url) == 2  # one batch: provider.rating_changed + review.posted
    assert await _rating_order(api) == [str(low), str(high)]
    row = db.execute(
        "SELECT rating_avg, rating_count, rating_sort FROM tutor_documents WHERE provider_id = %s",
        (low,),
    ).fetchone()
    assert row == (Decimal("4.00"), 2, Decimal("4.00"))


async def test_min_rating_and_facets_follow_reviews(
    api: httpx.AsyncClient, db: psycopg.Connection, database_url: str, clock: dict[str, Any]
) -> None:
    provider = tutor(db)
    set_rating(db, provider, stars=[3])
    with db.transaction():
        build_all(db)
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    assert (await api.get("/api/v1/search/tutors", params={"min_rating": 4})).json()["total"] == 0
    booking, student = completed_booking(db, provider)
    await _post(api, booking, student, rating=5)
    _drain(database_url)
    redis.Redis.from_url(TEST_REDIS_URL).flushdb()
    body = (await api.get("/api/v1/search/tutors", params={"min_rating": 4})).json()
    assert [i["id"] for i in body["items"]] == [str(provider)]
    assert [b["count"] for b in body["facets"]["rating"]] == [0, 0, 0, 1]


async def test_refresh_rating_prior_takes_the_platform_mean(db: psycopg.Connection) -> None:
    from core.db import async_session_factory
    from reviews import service

    a, b = create_provider(db), create_provider(db)
    set_rating(db, a, stars=[5, 5, 4])
    set_rating(db, b, stars=[2])
    set_prior(db, mean=4.0, weight=10)
    async with async_session_factory()() as s:
        mean, m, changed = await service.refresh_rating_prior(s, now=AFTER, weight=7)
        await s.commit()
    assert (mean, m, changed) == (Decimal("4.000"), 7, True)
    set_rating(db, b, stars=[1])
    async with async_session_factory()() as s:
        mean, m, changed = await service.refresh_rating_prior(s, now=AFTER, weight=7)
        await s.commit()
    assert (mean, m, changed) == (Decimal("3.750"), 7, True)
    assert db.execute("SELECT mean, weight FROM search_rating_prior").fetchone() == (
        Decimal("3.750"),
        7,
    )
