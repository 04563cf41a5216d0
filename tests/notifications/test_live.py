"""Live seat updates over Server-Sent Events: the real app under uvicorn, the `live` outbox
consumer looping in a thread (LISTEN wake-ups), Redis pub/sub and streams; holds made
through the API reach a connected client, and a reconnect with `Last-Event-ID` resumes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest

from core.security import utcnow
from tests.booking.helpers import create_slot, key
from tests.conftest import bearer, create_provider, create_user
from tests.notifications.kit import RelayThread, Server


@pytest.fixture
def live_stack(db: psycopg.Connection[Any], redis_url: str, database_url: str) -> Iterator[Server]:
    """The app served by uvicorn and the `live` relay, both in threads."""
    server = Server()
    relay = RelayThread(database_url, "live")
    yield server
    relay.stop()
    server.stop()


def read_event(lines: Iterator[str]) -> dict[str, Any]:
    """The next event block (`id`, `event`, `data`) of an SSE line iterator, skipping
    comments and the `retry:` preamble."""
    block: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "event" in block:
                block["data"] = json.loads(block["data"])
                return block
            block = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        block[field] = value.lstrip(" ")
    raise AssertionError("stream ended")


def hold(base: str, student: Any, slot: Any, seats: int = 1) -> None:
    r = httpx.post(
        f"{base}/api/v1/bookings",
        headers={**bearer(student, "student"), **key()},
        json={"slot_id": str(slot), "seats": seats},
        timeout=10,
    )
    assert r.status_code == 201, r.text


def test_sse_delivers_seat_held_and_resumes_from_last_event_id(
    db: psycopg.Connection[Any], live_stack: Server
) -> None:
    base = live_stack.base
    tutor = create_provider(db)
    slot = create_slot(db, tutor, start=utcnow() + timedelta(days=2), capacity=3)
    students = [create_user(db) for _ in range(3)]
    with (
        httpx.Client(base_url=base, timeout=10) as c,
        c.stream("GET", f"/api/v1/slots/{slot}/events") as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"] == "no-cache"
        lines = resp.iter_lines()
        assert next(lines) == "retry: 2000"
        hold(base, students[0], slot)
        first = read_event(lines)
    assert first["event"] == "seat.held"
    assert (first["data"]["slot_id"], first["data"]["seats_left"], first["data"]["capacity"]) == (
        str(slot), 2, 3,
    )  # fmt: skip

    # missed while disconnected: the second hold, then the third that fills the slot
    hold(base, students[1], slot)
    hold(base, students[2], slot)
    with (
        httpx.Client(base_url=base, timeout=10) as c,
        c.stream(
            "GET", f"/api/v1/slots/{slot}/events", headers={"Last-Event-ID": first["id"]}
        ) as resp,
    ):
        lines = resp.iter_lines()
        got = [read_event(lines) for _ in range(3)]
    assert [(e["event"], e["data"]["seats_left"]) for e in got] == [
        ("seat.held", 1), ("seat.held", 0), ("slot.full", 0),
    ]  # fmt: skip
    assert got[0]["id"] > first["id"]

    # the provider's stream carries the same events (its own ids)
    with (
        httpx.Client(base_url=base, timeout=10) as c,
        c.stream("GET", f"/api/v1/providers/{tutor}/availability/events?last_event_id=0-0") as resp,
    ):
        lines = resp.iter_lines()
        kinds = [read_event(lines)["event"] for _ in range(4)]
    assert kinds == ["seat.held", "seat.held", "seat.held", "slot.full"]


def test_sse_seat_released_and_slot_updated(
    db: psycopg.Connection[Any], live_stack: Server
) -> None:
    base = live_stack.base
    tutor = create_provider(db)
    slot = create_slot(db, tutor, start=utcnow() + timedelta(days=2), capacity=3)
    student = create_user(db)
    with (
        httpx.Client(base_url=base, timeout=10) as c,
        c.stream("GET", f"/api/v1/providers/{tutor}/availability/events") as resp,
    ):
        lines = resp.iter_lines()
        assert next(lines) == "retry: 2000"
        r = httpx.post(
            f"{base}/api/v1/bookings",
            headers={**bearer(student, "student"), **key()},
            json={"slot_id": str(slot), "seats": 2},
            timeout=10,
        )
        assert r.status_code == 201, r.text
        held = read_event(lines)
        r = httpx.post(
            f"{base}/api/v1/bookings/{r.json()['id']}/cancel",
            headers={**bearer(student, "student"), **key()},
            json={},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        released = read_event(lines)
        r = httpx.patch(
            f"{base}/api/v1/availability/{slot}",
            headers={**bearer(tutor, "tutor"), **key()},
            json={"capacity": 5},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        updated = read_event(lines)
    assert (held["event"], held["data"]["seats_left"]) == ("seat.held", 1)
    assert (released["event"], released["data"]["seats_left"]) == ("seat.released", 3)
    assert (updated["event"], updated["data"]["seats_left"], updated["data"]["capacity"]) == (
        "slot.updated", 5, 5,
    )  # fmt: skip


def test_sse_problems(db: psycopg.Connection[Any], live_stack: Server) -> None:
    import uuid

    base = live_stack.base
    tutor = create_provider(db)
    slot = create_slot(db, tutor, start=utcnow() + timedelta(days=2), capacity=3)
    r = httpx.get(f"{base}/api/v1/slots/{uuid.uuid4()}/events", timeout=5)
    assert r.status_code == 404
    assert r.json()["code"] == "slot_not_found"
    r = httpx.get(f"{base}/api/v1/providers/{uuid.uuid4()}/availability/events", timeout=5)
    assert r.status_code == 404
    assert r.json()["code"] == "provider_not_found"
    r = httpx.get(
        f"{base}/api/v1/slots/{slot}/events", headers={"Last-Event-ID": "yesterday"}, timeout=5
    )
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_last_event_id"


@pytest.mark.browser
def test_two_pages_see_the_seat_count_change_without_a_reload(
    db: psycopg.Connection[Any], live_stack: Server, browser: Any
) -> None:
    """Two browser pages on a provider's page; a hold made through the API changes the
    group class's seats on both, without a reload."""
    from playwright.sync_api import expect

    base = live_stack.base
    tutor = create_provider(db)
    slot = create_slot(db, tutor, start=utcnow() + timedelta(days=2), capacity=5)
    student = create_user(db)
    errors: list[str] = []
    contexts: list[Any] = []
    try:
        pages = []
        for locale in ("fr-FR", "en-GB"):
            ctx = browser.new_context(locale=locale, base_url=base)
            contexts.append(ctx)
            ctx.set_default_timeout(15_000)
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"/providers/{tutor}")
            seats = page.locator(f'[data-slot-id="{slot}"] .seats-left')
            expect(seats).to_have_attribute("data-seats-left", "5")
            expect(page.locator("body")).to_have_attribute("data-live", "open")
            page.evaluate("window.__before_hold = true")  # a reload would lose it
            pages.append((page, seats))
        hold(base, student, slot, seats=2)
        for _, seats in pages:
            expect(seats).to_have_attribute("data-seats-left", "3")
        fr, en = (s.text_content() for _, s in pages)
        assert fr is not None
        assert "places restantes" in fr
        assert en is not None
        assert "seats left" in en
        for page, _ in pages:
            assert page.evaluate("window.__before_hold") is True
    finally:
        for ctx in contexts:
            ctx.close()
    assert not errors, errors
