"""`educonnect demo journey`: the student journey through the HTTP API of a running stack.

A newcomer's proof that everything works: a tutor signs up, publishes a profile in Paris and
a 3-seat group class and uploads a KYC document; an admin (the seed's
`admin@educonnect.dev` by default) verifies it; the streaming indexer makes it findable; a student finds it on the
map search, opens the profile and its slots, holds 2 seats (the live-seat stream says so),
creates the PaymentIntent, pays
(the Stripe stand-in is told to succeed the intent, as `stripe trigger` does, through the
API's test-payment route; the signed webhook and the worker confirm the booking), asks
for the video session token (three days ahead the answer is 409 `too_early` with the
window's opening: the check itself), and reads the refund a cancellation would give.
Posting a review needs a completed lesson (after its end), which a demo on a live clock
cannot reach: the browser tests do it with the test clock. Each step is printed with its
latency; the exit status is 1 at the first failure (the step, the status and the body are printed).

Needs the API, a Celery worker, the indexer, the live-seat relay and the Stripe and
LiveKit stand-ins (`make run` starts them all). Every run creates fresh accounts (a unique email suffix), so it can be repeated.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import typer

demo_app = typer.Typer(no_args_is_help=True, help="Demonstrations against a running stack.")

PARIS = (48.8566, 2.3522)
PASSWORD = "demo-journey-password-1"  # noqa: S105 - demo accounts it creates


class StepFailed(Exception):
    """A step of the journey did not give what it should."""


class Journey:
    """The steps, their latencies and the printing."""

    def __init__(self, client: httpx.Client, wait_s: float, echo: Callable[[str], None]) -> None:
        self.c = client
        self.wait_s = wait_s
        self.echo = echo
        self.steps: list[tuple[str, float]] = []

    def step(self, name: str, fn: Callable[[], str]) -> None:
        t0 = time.perf_counter()
        detail = fn()
        ms = (time.perf_counter() - t0) * 1000
        self.steps.append((name, ms))
        self.echo(f"  ok  {name:<34} {ms:8.1f} ms  {detail}")

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kw: Any) -> Any:
        r = self.c.request(method, path, **kw)
        if r.status_code not in expect:
            raise StepFailed(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        return r.json() if r.content else None

    def until(self, what: str, probe: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.wait_s
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out after {self.wait_s:.0f} s waiting for {what}")
            time.sleep(0.05)


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f'"{uuid.uuid4()}"'}


def run_journey(
    base_url: str,
    *,
    wait_s: float = 30.0,
    echo: Callable[[str], None] = print,
    admin_email: str = "admin@educonnect.dev",
    admin_password: str = "educonnect-demo",  # noqa: S107 - the seed's published password
) -> list[tuple[str, float]]:
    """Drive the journey against `base_url`; the steps and their latencies (ms). Raises
    `StepFailed` at the first failure."""
    api = "/api/v1"
    tag = uuid.uuid4().hex[:8]
    name = f"Demo Tutor {tag}"
    state: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        j = Journey(client, wait_s, echo)

        def ready() -> str:
            j.call("GET", "/readyz")
            return "API ready"

        def tutor_signs_up() -> str:
            email = f"demo-tutor-{tag}@example.com"
            j.call("POST", f"{api}/auth/register", (201,), json={
                "email": email, "password": PASSWORD, "full_name": name, "role": "tutor"})  # fmt: skip
            tok = j.call(
                "POST", f"{api}/auth/login", data={"username": email, "password": PASSWORD}
            )
            state["tutor"] = {"Authorization": f"Bearer {tok['access_token']}"}
            me = j.call("GET", f"{api}/me", headers=state["tutor"])
            state["tutor_id"] = me["id"]
            return email

        def tutor_profile() -> str:
            j.call("PUT", f"{api}/profiles/me", (200, 201), headers=state["tutor"], json={
                "display_name": name, "headline": "Mathematics, demo journey",
                "subjects": ["mathematics"], "languages": ["fr", "en"],
                "hourly_rate_minor": 3000, "currency": "EUR", "online": True,
                "location": {"lat": PARIS[0], "lng": PARIS[1]}, "city": "Paris",
                "country_code": "FR"})  # fmt: skip
            return "mathematics, Paris, 30 EUR/h"

        def tutor_adds_slot() -> str:
            start = (datetime.now(UTC) + timedelta(days=3)).replace(
                minute=0, second=0, microsecond=0
            )
            body = {"starts_at": start.isoformat(), "ends_at": (start + timedelta(hours=1)).isoformat(),
                    "capacity": 3}  # fmt: skip
            out = j.call(
                "POST",
                f"{api}/availability",
                (201,),
                headers={**state["tutor"], **_key()},
                json=body,
            )
            state["slot"] = out["items"][0]["id"]
            return f"3 seats at {start:%Y-%m-%d %H:%M} UTC"

        def kyc_document() -> str:
            pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
            j.call(
                "POST", f"{api}/profiles/me/kyc-documents", (200, 201), headers=state["tutor"],
                data={"type": "id_card"}, files={"file": ("id.pdf", pdf, "application/pdf")},
            )  # fmt: skip
            return "id_card (PDF)"

        def admin_verifies() -> str:
            tok = j.call("POST", f"{api}/auth/login",
                         data={"username": admin_email, "password": admin_password})  # fmt: skip
            admin = {"Authorization": f"Bearer {tok['access_token']}"}
            out = j.call("POST", f"{api}/admin/kyc/{state['tutor_id']}/verify", headers=admin,
                         json={"decision": "approve", "note": "demo journey"})  # fmt: skip
            return f"{out['kyc_status_before']} -> {out['kyc_status']} (searchable)"

        def found_on_map() -> str:
            params = {"q": name, "lat": PARIS[0], "lng": PARIS[1], "radius_km": 5, "limit": 5}

            def probe() -> Any:
                page = j.call("GET", f"{api}/search/tutors", params=params)
                return next((i for i in page["items"] if i["id"] == state["tutor_id"]), None)

            j.until("the tutor to be indexed (is the indexer running?)", probe)
            return "indexed and found by text around Paris"

        def profile_page() -> str:
            prof = j.call("GET", f"{api}/providers/{state['tutor_id']}")
            html = client.get(f"/providers/{state['tutor_id']}")
            if html.status_code != 200:
                raise StepFailed(f"GET /providers/{{id}} page -> {html.status_code}")
            return f"{prof['display_name']} (page and API)"

        def reviews() -> str:
            page = j.call("GET", f"{api}/providers/{state['tutor_id']}/reviews")
            hist = page["rating"]["histogram"]
            return f"{page['rating']['rating_count']} review(s), histogram {hist}"

        def slots() -> str:
            page = j.call("GET", f"{api}/providers/{state['tutor_id']}/availability")
            slot = next((s for s in page["items"] if s["id"] == state["slot"]), None)
            if slot is None or slot["seats_left"] != 3:
                raise StepFailed(f"the new slot is not listed with 3 seats left: {slot}")
            return "3 seats left"

        def student_signs_up() -> str:
            email = f"demo-student-{tag}@example.com"
            j.call("POST", f"{api}/auth/register", (201,), json={
                "email": email, "password": PASSWORD, "full_name": "Demo Student",
                "role": "student"})  # fmt: skip
            tok = j.call(
                "POST", f"{api}/auth/login", data={"username": email, "password": PASSWORD}
            )
            state["student"] = {"Authorization": f"Bearer {tok['access_token']}"}
            return email

        def hold() -> str:
            b = j.call("POST", f"{api}/bookings", (201,), headers={**state["student"], **_key()},
                       json={"slot_id": state["slot"], "seats": 2})  # fmt: skip
            state["booking"] = b
            state["held_at"] = time.perf_counter()
            return (
                f"2 seats pending until {b['hold_expires_at']}, {b['price_minor']} {b['currency']}"
            )

        def seats_dropped() -> str:
            page = j.call("GET", f"{api}/providers/{state['tutor_id']}/availability")
            slot = next(s for s in page["items"] if s["id"] == state["slot"])
            if slot["seats_left"] != 1:
                raise StepFailed(f"seats_left is {slot['seats_left']}, not 1, while held")
            return "1 seat left"

        def live_seats() -> str:
            # what the provider page's EventSource receives: the stream replays the
            # slot's recent events from the start (Last-Event-ID 0-0)
            url = f"{api}/slots/{state['slot']}/events"
            deadline = time.monotonic() + j.wait_s
            with client.stream("GET", url, headers={"Last-Event-ID": "0-0"}, timeout=j.wait_s) as r:
                if r.status_code != 200:
                    raise StepFailed(f"GET {url} -> {r.status_code}")
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event.get("type") == "seat.held" and event.get("seats_left") == 1:
                            return "seat.held, seats_left 1 (SSE)"
                    if time.monotonic() > deadline:
                        break
            raise StepFailed("no seat.held event with seats_left 1 (is the live relay running?)")

        def payment_intent() -> str:
            bid = state["booking"]["id"]
            out = j.call("POST", f"{api}/bookings/{bid}/payment-intent", (200, 201),
                         headers={**state["student"], **_key()})  # fmt: skip
            state["intent"] = out["client_secret"].split("_secret_")[0]
            return f"{state['intent']} {out['amount_minor']} {out['currency']}"

        def pay() -> str:
            j.call("POST", f"/_test/payment_intents/{state['intent']}/succeed")
            return "the Stripe stand-in succeeded the intent (signed webhook sent)"

        def confirmed() -> str:
            bid = state["booking"]["id"]

            def probe() -> Any:
                b = j.call("GET", f"{api}/bookings/{bid}", headers=state["student"])
                if b["status"] not in ("pending", "confirmed"):
                    raise StepFailed(f"the booking became {b['status']}")
                return b if b["status"] == "confirmed" else None

            j.until("the webhook to confirm the booking (is the worker running?)", probe)
            total = (time.perf_counter() - state["held_at"]) * 1000
            return f"hold -> confirmed in {total:.0f} ms"

        def session_token() -> str:
            bid = state["booking"]["id"]
            r = client.post(f"{api}/bookings/{bid}/session-token", headers=state["student"])
            body = r.json() if r.content else {}
            if r.status_code == 200:
                return f"room {body['room']} at {body['url']}"
            if r.status_code == 409 and body.get("code") == "too_early":
                # the lesson is in 3 days: the join window is not open yet, as it should be
                return f"too early: the room opens at {body.get('opens_at')}"
            raise StepFailed(f"POST session-token -> {r.status_code}: {r.text[:300]}")

        def cancel_preview() -> str:
            bid = state["booking"]["id"]
            p = j.call("GET", f"{api}/bookings/{bid}/cancel-preview", headers=state["student"])
            return (
                f"a cancellation now would refund {p['refund_due_minor']} ({p['refund_percent']} %)"
            )

        steps: list[tuple[str, Callable[[], str]]] = [
            ("API ready", ready),
            ("tutor signs up", tutor_signs_up),
            ("tutor publishes a profile", tutor_profile),
            ("tutor adds a group class", tutor_adds_slot),
            ("tutor uploads a KYC document", kyc_document),
            ("admin verifies the tutor", admin_verifies),
            ("student finds the tutor (search)", found_on_map),
            ("student opens the profile", profile_page),
            ("student reads the reviews", reviews),
            ("student sees the slots", slots),
            ("student signs up", student_signs_up),
            ("student holds 2 seats", hold),
            ("seats left drop while held", seats_dropped),
            ("live seats (SSE)", live_seats),
            ("payment intent", payment_intent),
            ("payment (stand-in succeeds it)", pay),
            ("confirmed by the webhook", confirmed),
            ("video session token", session_token),
            ("refund shown before cancel", cancel_preview),
        ]
        for step_name, fn in steps:
            try:
                j.step(step_name, fn)
            except (httpx.HTTPError, KeyError, StopIteration) as exc:
                raise StepFailed(f"{step_name}: {type(exc).__name__}: {exc}") from exc
            except StepFailed as exc:
                raise StepFailed(f"{step_name}: {exc}") from exc
        return j.steps


@demo_app.command("journey")
def journey(
    api_url: Annotated[
        str, typer.Option("--api", help="Base URL of the running API")
    ] = "http://127.0.0.1:8000",
    wait_s: Annotated[
        float, typer.Option(min=1, help="Longest wait for indexing and the webhook (s)")
    ] = 30.0,
    admin_email: Annotated[
        str, typer.Option(help="An admin account (verifies the tutor's KYC)")
    ] = "admin@educonnect.dev",
    admin_password: Annotated[
        str, typer.Option(envvar="EDUCONNECT_ADMIN_PASSWORD", help="Its password")
    ] = "educonnect-demo",  # noqa: S107 - the seed's published password
) -> None:
    """Drive the whole journey through the HTTP API and print each step's latency."""
    typer.echo(f"EduConnect journey against {api_url}")
    t0 = time.perf_counter()
    try:
        steps = run_journey(
            api_url, wait_s=wait_s, echo=typer.echo, admin_email=admin_email,
            admin_password=admin_password,
        )  # fmt: skip
    except StepFailed as exc:
        typer.echo(f"  FAIL {exc}", err=True)
        raise typer.Exit(1) from None
    total = (time.perf_counter() - t0) * 1000
    typer.echo(f"journey complete: {len(steps)} steps in {total:.0f} ms")
