"""Reviews drive the rating; KYC gates search; the back-office's tables.

- `provider_profiles.rating_sum` (integer stars of the counted reviews): with
  `rating_count` it is the exact state of the rating, `rating_avg` = round(sum / count, 2)
  derived in the same UPDATE (reviews/service.py). Existing rated rows become seeded
  reviews (`reviews.source = 'seed'`, no booking): `rating_count` reviews whose stars sum
  to round(rating_avg x count), so a recount from `reviews` agrees from the start.
- `reviews` (one per booking), `session_evaluations`, `complaints`, `kyc_documents`.
- `search_rating_prior`: the one row (mean C, weight m) of the damped rating sort key
  (no row: m = 0, the plain average).
- `search_document_source`: `searchable` = active AND `kyc_status = 'verified'`;
  `rating_sort` = the IMDb weighted rating (v·R + m·C) / (v + m) rounded to hundredths
  (0 when unrated, so unrated providers sort last); the facet rows carry `rating_sort`
  too (the block path pages by it), so existing documents, facet rows and blocks are
  rewritten here (the record layout gained the `rank` field).

Revision ID: 0018_reviews
Revises: 0016_sessions (0017_notifications once the lead chains it)
Create Date: 2026-12-05
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0018_reviews"
down_revision = "0017_notifications"
branch_labels = None
depends_on = None

_SEARCHABLE_OLD = "(u.active AND p.kyc_status <> 'rejected')   AS searchable"
_SEARCHABLE_NEW = "(u.active AND p.kyc_status = 'verified')    AS searchable"
_SORT_OLD = "coalesce(p.rating_avg, 0)::numeric(3, 2)    AS rating_sort"
# The IMDb weighted rating (v·R + m·C) / (v + m): v = rating_count, R = rating_avg,
# C = the platform mean and m = the prior weight (search_rating_prior, one row).
_SORT_NEW = (
    "CASE WHEN p.rating_count > 0 THEN round("
    "(p.rating_count * p.rating_avg + coalesce(pr.weight, 0) * coalesce(pr.mean, 0))"
    " / (p.rating_count + coalesce(pr.weight, 0)), 2)"
    " ELSE 0 END::numeric(3, 2)                AS rating_sort"
)
_FROM_OLD = "FROM provider_profiles p\nJOIN users u ON u.id = p.user_id\n"
# Without a prior row (an emptied table) m = 0: the plain average.
_FROM_NEW = (
    "FROM provider_profiles p\nJOIN users u ON u.id = p.user_id\n"
    "LEFT JOIN search_rating_prior pr ON pr.id\n"
)


def _view_0014() -> str:
    path = Path(__file__).with_name("0014_booking.py")
    spec = importlib.util.spec_from_file_location("_educonnect_0014_booking", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.source_view())


def source_view() -> str:
    """The 0014 view with the KYC gate and the damped rating sort key."""
    view = _view_0014()
    for old, new in (
        (_SEARCHABLE_OLD, _SEARCHABLE_NEW),
        (_SORT_OLD, _SORT_NEW),
        (_FROM_OLD, _FROM_NEW),
    ):
        assert view.count(old) == 1, old
        view = view.replace(old, new)
    return view


def _refresh_search() -> None:
    """Existing documents follow the new view (rating_sort, unverified providers out),
    the facet rows take `rating_sort`, and every block is re-packed (new record layout)."""
    from search.engines.postgres.blocks import block_rows_sql

    for family in ("tutor", "coach"):
        op.execute(
            f"DELETE FROM {family}_documents d USING search_document_source s"
            " WHERE s.provider_id = d.provider_id AND NOT s.searchable"
        )
        op.execute(
            f"DELETE FROM {family}_facets f WHERE NOT EXISTS"
            f" (SELECT 1 FROM {family}_documents d WHERE d.provider_id = f.provider_id)"
        )
        op.execute(
            f"UPDATE {family}_documents d SET rating_sort = s.rating_sort"
            " FROM search_document_source s"
            " WHERE s.provider_id = d.provider_id AND d.rating_sort <> s.rating_sort"
        )
        op.execute(
            f"UPDATE {family}_facets f SET rating_sort = d.rating_sort FROM {family}_documents d"
            " WHERE d.provider_id = f.provider_id"
        )
        op.execute(f"DELETE FROM {family}_facet_blocks")
        rows = block_rows_sql(family, f"{family}_facets", f"{family}_documents")
        op.execute(
            f"INSERT INTO {family}_facet_blocks (cell, n, rows, others, avail, items) "
            + rows
            + " ORDER BY cell"
        )


def upgrade() -> None:
    op.execute(
        # No CHECK tying it to rating_count: rows written before this column (fixtures
        # that set rating_avg alone) keep working; reviews/service.py keeps it exact.
        "ALTER TABLE provider_profiles ADD COLUMN rating_sum bigint NOT NULL DEFAULT 0"
        " CHECK (rating_sum >= 0)"
    )
    op.execute(
        """
        CREATE TABLE reviews (
            id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            booking_id    uuid UNIQUE REFERENCES bookings (id) ON DELETE CASCADE,
            provider_id   uuid NOT NULL REFERENCES provider_profiles (user_id) ON DELETE CASCADE,
            student_id    uuid REFERENCES users (id),
            author_id     uuid REFERENCES users (id),
            source        text NOT NULL DEFAULT 'booking' CHECK (source IN ('booking', 'seed')),
            rating        smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
            comment       text CHECK (char_length(comment) <= 4000),
            locale        text NOT NULL DEFAULT 'en',
            hidden_at     timestamptz,
            hidden_by     uuid REFERENCES users (id),
            hidden_reason text,
            reply         text CHECK (char_length(reply) <= 4000),
            replied_at    timestamptz,
            created_at    timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now(),
            CHECK ((source = 'booking') = (booking_id IS NOT NULL)),
            CHECK ((hidden_at IS NULL) = (hidden_reason IS NULL)),
            CHECK ((reply IS NULL) = (replied_at IS NULL))
        )
        """
    )
    op.execute(
        "CREATE INDEX reviews_provider_idx ON reviews (provider_id, created_at DESC, id DESC)"
        " WHERE hidden_at IS NULL"
    )
    # Existing ratings become seeded reviews: count reviews whose stars sum to
    # round(avg x count) (q + 1 stars for the first r, q for the others).
    op.execute(
        "UPDATE provider_profiles SET rating_sum = least(greatest("
        "round(rating_avg * rating_count), rating_count), 5 * rating_count)"
        " WHERE rating_count > 0"
    )
    op.execute(
        "UPDATE provider_profiles SET rating_avg = round(rating_sum::numeric / rating_count, 2)"
        " WHERE rating_count > 0"
    )
    op.execute(
        "INSERT INTO reviews (provider_id, source, rating, locale, created_at, updated_at)"
        " SELECT p.user_id, 'seed', (p.rating_sum / p.rating_count"
        " + CASE WHEN i <= p.rating_sum % p.rating_count THEN 1 ELSE 0 END)::smallint,"
        " 'en', p.created_at, p.created_at"
        " FROM provider_profiles p, generate_series(1, p.rating_count) i"
        " WHERE p.rating_count > 0"
    )
    op.execute(
        """
        CREATE TABLE search_rating_prior (
            id         boolean PRIMARY KEY DEFAULT true CHECK (id),
            mean       numeric(4, 3) NOT NULL CHECK (mean BETWEEN 0 AND 5),
            weight     integer NOT NULL CHECK (weight >= 0),
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "INSERT INTO search_rating_prior (mean, weight) SELECT coalesce(round("
        "sum(rating_sum)::numeric / nullif(sum(rating_count), 0), 3), 4.000), 10"
        " FROM provider_profiles"
    )
    op.execute(
        """
        CREATE TABLE session_evaluations (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            booking_id  uuid NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
            provider_id uuid NOT NULL REFERENCES users (id),
            student_id  uuid NOT NULL REFERENCES users (id),
            type        text NOT NULL CHECK (type IN ('quiz', 'feedback', 'milestone')),
            payload     jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX session_evaluations_booking_idx ON session_evaluations (booking_id, created_at)"
    )
    op.execute(
        """
        CREATE TABLE complaints (
            id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            booking_id       uuid NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
            filed_by         uuid NOT NULL REFERENCES users (id),
            reason           text NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 4000),
            status           text NOT NULL DEFAULT 'open'
                             CHECK (status IN ('open', 'in_review', 'closed')),
            note             text,
            refund_due_minor bigint CHECK (refund_due_minor >= 0),
            refund_status    text CHECK (refund_status IN ('due', 'refunded')),
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            CHECK ((refund_due_minor IS NULL) = (refund_status IS NULL))
        )
        """
    )
    op.execute("CREATE INDEX complaints_status_idx ON complaints (status, created_at, id)")
    op.execute(
        """
        CREATE TABLE kyc_documents (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            doc_type     text NOT NULL CHECK (doc_type IN ('id_card', 'passport', 'driving_licence',
                                                          'proof_of_address', 'diploma', 'other')),
            content_type text NOT NULL CHECK (content_type IN ('application/pdf', 'image/jpeg',
                                                              'image/png')),
            size_bytes   integer NOT NULL CHECK (size_bytes > 0),
            sha256       text NOT NULL,
            storage_key  text NOT NULL UNIQUE,
            created_at   timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX kyc_documents_user_idx ON kyc_documents (user_id, created_at)")
    op.execute("CREATE INDEX bookings_status_idx ON bookings (status, starts_at, id)")
    op.execute("CREATE INDEX audit_log_at_idx ON audit_log (at, id)")
    for family in ("tutor", "coach"):
        op.execute(
            f"ALTER TABLE {family}_facets ADD COLUMN rating_sort numeric(3, 2) NOT NULL DEFAULT 0"
        )
    op.execute(source_view())
    _refresh_search()


def downgrade() -> None:
    op.execute(_view_0014())
    for family in ("tutor", "coach"):
        op.execute(f"ALTER TABLE {family}_facets DROP COLUMN IF EXISTS rating_sort")
    op.execute("DROP INDEX IF EXISTS audit_log_at_idx")
    op.execute("DROP INDEX IF EXISTS bookings_status_idx")
    for table in (
        "kyc_documents",
        "complaints",
        "session_evaluations",
        "search_rating_prior",
        "reviews",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("ALTER TABLE provider_profiles DROP COLUMN IF EXISTS rating_sum")
