"""The seed generator: determinism, real geography, valid codes, realistic distributions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from geographiclib.geodesic import Geodesic

from core.languages import ISO_639_1
from core.money import MINOR_UNIT_EXPONENT
from devdata.seed import (
    COUNTRIES,
    SPREAD_CAP_SIGMAS,
    Generator,
    SeedError,
    SeedParams,
    city_spread_km,
    load_cities,
    seed,
)
from profiles.catalogue import EXPERTISES_BY_SLUG, SUBJECTS_BY_SLUG

START = date(2030, 3, 4)
SMALL = SeedParams(tutors=400, coaches=100, students=50, seed=7, start=START)


def _fingerprint(conn: psycopg.Connection[Any]) -> str:
    h = hashlib.sha256()
    for query in (
        "SELECT id, email, role, locale FROM users ORDER BY id",
        "SELECT user_id, kind, display_name, headline, bio, subjects, expertises, languages,"
        " hourly_rate_minor, currency, rating_avg, rating_count, online, in_person,"
        " ST_AsText(location), city, country_code FROM provider_profiles ORDER BY user_id",
        "SELECT id, provider_id, starts_at, ends_at, mode, capacity FROM availability_slots ORDER BY id",
        "SELECT parent_id, child_id FROM parent_children ORDER BY 1, 2",
        "SELECT id, student_id, slot_id, status, price_minor, currency, refund_due_minor"
        " FROM bookings ORDER BY id",
        "SELECT id, booking_id, gateway_ref, amount_minor, captured_minor, refunded_minor"
        " FROM payments ORDER BY id",
        "SELECT id, payment_id, gateway_ref, amount_minor FROM refunds ORDER BY id",
    ):
        for row in conn.execute(query):
            h.update(repr(row).encode())
    return h.hexdigest()


def test_same_seed_same_rows_other_seed_other_rows(db: psycopg.Connection[Any]) -> None:
    first = seed(db, SMALL)
    fp1 = _fingerprint(db)
    seed(db, SMALL)
    assert _fingerprint(db) == fp1
    seed(db, SeedParams(tutors=400, coaches=100, students=50, seed=8, start=START))
    assert _fingerprint(db) != fp1
    assert first.tutors == 400
    assert first.coaches == 100
    assert first.slots > 0


def test_loaded_rows_match_the_request(db: psycopg.Connection[Any]) -> None:
    result = seed(db, SMALL)
    kinds = dict(
        db.execute("SELECT kind, count(*) FROM provider_profiles GROUP BY kind").fetchall()
    )
    assert kinds["tutor"] == 400
    assert kinds.get("coach", 0) + kinds.get("mentor", 0) == 100
    assert kinds.get("mentor", 0) > 0
    roles = dict(db.execute("SELECT role, count(*) FROM users GROUP BY role").fetchall())
    assert roles["student"] == 50
    assert roles["parent"] == 10
    assert roles["admin"] == 1
    (slots,) = db.execute("SELECT count(*) FROM availability_slots").fetchone()
    assert slots == result.slots
    # every parent has 1 or 2 children, all students
    bad = db.execute(
        "SELECT count(*) FROM parent_children pc JOIN users c ON c.id = pc.child_id"
        " WHERE c.role <> 'student'"
    ).fetchone()
    assert bad == (0,)


def test_every_provider_is_near_its_real_city(db: psycopg.Connection[Any]) -> None:
    seed(db, SMALL)
    cities: dict[tuple[str, str], list[Any]] = {}
    for c in load_cities(SMALL.countries):
        cities.setdefault((c.name, c.country), []).append(c)
    rows = db.execute(
        "SELECT ST_Y(location::geometry), ST_X(location::geometry), city, country_code"
        " FROM provider_profiles"
    ).fetchall()
    assert len(rows) == 500
    for lat, lng, city, country in rows:
        candidates = cities[(city, country)]  # a real geonames city of that country
        # geodesic (WGS84) distance, independent of the generator's spherical formula
        ok = any(
            Geodesic.WGS84.Inverse(c.lat, c.lng, lat, lng)["s12"] / 1000
            <= SPREAD_CAP_SIGMAS * city_spread_km(c.population) * 1.005 + 0.001
            for c in candidates
        )
        assert ok, (lat, lng, city, country)


def test_codes_are_valid_and_values_plausible(db: psycopg.Connection[Any]) -> None:
    seed(db, SMALL)
    rows = db.execute(
        "SELECT kind, subjects, expertises, languages, hourly_rate_minor, currency, rating_avg,"
        " rating_count, online, in_person, country_code FROM provider_profiles"
    ).fetchall()
    ratings = []
    for (
        kind,
        subjects,
        expertises,
        languages,
        rate,
        currency,
        avg,
        count,
        online,
        in_person,
        cc,
    ) in rows:
        assert languages, "every provider speaks at least one language"
        assert set(languages) <= ISO_639_1
        assert currency == COUNTRIES[cc].currency
        assert currency in MINOR_UNIT_EXPONENT
        assert rate > 0
        if kind == "tutor":
            assert 1 <= len(subjects) <= 3
            assert set(subjects) <= SUBJECTS_BY_SLUG.keys()
            assert expertises == []
        else:
            assert 1 <= len(expertises) <= 3
            assert set(expertises) <= EXPERTISES_BY_SLUG.keys()
            assert subjects == []
        assert online or in_person
        if avg is None:
            assert count == 0
        else:
            assert 1 <= avg <= 5
            assert count >= 1
            ratings.append(float(avg))
    # skewed towards high ratings, as on real marketplaces
    assert sum(ratings) / len(ratings) > 4.0
    assert min(ratings) < 4.0


def test_rates_follow_the_country(db: psycopg.Connection[Any]) -> None:
    seed(db, SeedParams(tutors=1500, coaches=0, students=0, seed=3, start=START))
    med = dict(
        db.execute(
            "SELECT currency, percentile_cont(0.5) WITHIN GROUP (ORDER BY hourly_rate_minor)"
            " FROM provider_profiles GROUP BY currency"
        ).fetchall()
    )
    assert 1500 <= med["EUR"] <= 6000  # 15 to 60 €/h
    assert med["CHF"] > med["EUR"]  # Switzerland is dearer
    assert 2000 <= med["XOF"] <= 20000  # zero-decimal currency: francs, not centimes


def test_slots_are_local_daytime_within_the_window(db: psycopg.Connection[Any]) -> None:
    seed(db, SMALL)
    rows = db.execute(
        "SELECT s.starts_at, s.ends_at, s.capacity, s.mode, p.online, p.in_person, p.city,"
        " p.country_code FROM availability_slots s JOIN provider_profiles p ON p.user_id = s.provider_id"
    ).fetchall()
    tz_of: dict[tuple[str, str], set[str]] = {}
    for c in load_cities(SMALL.countries):  # a name may exist in several zones (US)
        tz_of.setdefault((c.name, c.country), set()).add(c.timezone)
    lo = datetime(START.year, START.month, START.day, tzinfo=UTC) - timedelta(days=1)
    hi = lo + timedelta(days=7 * SMALL.weeks + 2)
    groups = 0
    for starts, ends, capacity, mode, online, in_person, city, cc in rows:
        assert lo <= starts < hi
        assert timedelta(minutes=60) <= ends - starts <= timedelta(minutes=90)
        hours = {starts.astimezone(ZoneInfo(tz)).hour for tz in tz_of[(city, cc)]}
        assert any(8 <= h <= 18 for h in hours), (starts, city, cc)
        assert (mode == "online" and online) or (mode == "in_person" and in_person)
        groups += capacity > 1
    assert 0 < groups < len(rows) * 0.2


def test_population_and_market_weighting() -> None:
    gen = Generator(SeedParams(tutors=0, coaches=0, seed=11, countries=("FR",), start=START))
    picks = Counter(gen.city().name for _ in range(6000))
    assert picks.most_common(1)[0][0] == "Paris"
    gen = Generator(SeedParams(tutors=0, coaches=0, seed=11, start=START))
    by_country = Counter(gen.city().country for _ in range(20000))
    total_weight = sum(c.weight for c in COUNTRIES.values())
    for code, profile in COUNTRIES.items():
        expected = 20000 * profile.weight / total_weight
        assert abs(by_country[code] - expected) < 5 * expected**0.5 + 10, code


@pytest.mark.parametrize(
    "kwargs",
    [{"tutors": -1}, {"coaches": -5}, {"countries": ("FR", "ZZ")}, {"countries": ()}, {"weeks": 0}],
)
def test_bad_parameters_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(SeedError):
        SeedParams(**kwargs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tutors", "-3"], "--tutors must be ≥ 0"),
        (["--country", "XX"], "unknown country XX"),
        (["--start", "tomorrow"], "not a date"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(
    database_url: str, args: list[str], message: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "seed", *args],
        capture_output=True,
        text=True,
        env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_reports_progress_in_lines_when_not_on_a_terminal(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """Off a terminal (a log file, a pipe) each phase ends with a plain line, and the
    summary is one line however long."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "seed", "--tutors", "30", "--coaches", "10",
         "--students", "0", "--start", "2030-03-04"],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "DATABASE_URL": database_url, "COLUMNS": "80"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "seeding: providers 40/40 (100 %)" in proc.stderr
    assert "seeding: slots 40/40 (100 %)" in proc.stderr
    assert sum(line.startswith("seeding: slots 40/40") for line in lines) == 1
    assert any(line.startswith("search documents built: 40 in") for line in lines)
    summary = next(line for line in lines if line.startswith("seeded 30 tutors, 10 coaches"))
    assert "admin: admin@educonnect.dev" in summary
    assert "━" not in proc.stderr  # no progress bar drawn into the log


async def test_paid_and_refunded_bookings_fill_the_finance_report_with_a_balanced_ledger(
    db: psycopg.Connection[Any], api: Any
) -> None:
    """Seeded bookings carry payments (`pi_seed…`), refunds and the ledger transactions
    payments posts: the admin finance report shows gross, refunds, commission and
    earnings, every ledger transaction balances, and a second seed replaces them all."""
    from tests.conftest import bearer

    seed(db, SMALL)
    result = seed(db, SMALL)  # a re-seed replaces the money too (no stale ledger keys)
    assert 0 < result.bookings <= 300
    assert result.refunds > 0
    counts = db.execute(
        "SELECT count(*) FILTER (WHERE status = 'confirmed'),"
        " count(*) FILTER (WHERE status = 'refunded'), count(*) FROM bookings"
    ).fetchone()
    assert counts is not None
    assert counts[0] > 0
    assert counts[1] > 0
    assert counts[2] == result.bookings
    assert db.execute(
        "SELECT count(*) FROM payments WHERE status <> 'succeeded'"
        " OR gateway_ref !~ '^pi_seed[0-9a-f]{24}$' OR captured_minor <> amount_minor"
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT count(*) FROM bookings b JOIN payments p ON p.booking_id = b.id"
        " WHERE b.status = 'refunded' AND p.refunded_minor <> b.refund_due_minor"
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT count(*) FROM ledger_transactions WHERE kind = 'payment'"
    ).fetchone() == (result.bookings,)
    assert db.execute(
        "SELECT count(*) FROM ledger_transactions WHERE kind = 'refund'"
    ).fetchone() == (result.refunds,)
    unbalanced = db.execute(
        "SELECT txn_id, currency FROM ledger_entries GROUP BY txn_id, currency"
        " HAVING sum(amount_minor) <> 0"
    ).fetchall()
    assert unbalanced == []
    (admin,) = db.execute("SELECT id FROM users WHERE role = 'admin'").fetchone() or (None,)
    now = datetime.now(UTC)
    r = await api.get(
        "/api/v1/admin/reports/finance",
        headers=bearer(admin, "admin"),
        params={
            "from": (now - timedelta(days=1)).isoformat(),
            "to": (now + timedelta(days=1)).isoformat(),
        },
    )
    assert r.status_code == 200, r.text
    rows = r.json()["currencies"]
    assert rows
    totals = {
        k: sum(row[k] for row in rows)
        for k in ("gross_minor", "refunds_minor", "commission_minor", "provider_earnings_minor")
    }
    assert all(v > 0 for v in totals.values()), totals
    paid = db.execute("SELECT sum(amount_minor) FROM payments").fetchone()
    assert paid == (totals["gross_minor"],)
