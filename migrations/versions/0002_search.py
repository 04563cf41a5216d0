"""Search: document tables shaped for the PostgreSQL search engine, the catalogue of
indexed words, and the one SQL definition of a search document (`search_document_source`).

The 0001 document tables are replaced: the new ones add a sort key for ratings
(`rating_sort`), keep the tsvector out of line (narrow heap rows for the geo/facet scan)
and carry the btree indexes the non-geo sorts need. `indexer/projection.py` documents every
column.

Revision ID: 0002_search
Revises: 0001_foundation
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0002_search"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

# The one definition of a search document, used by the bulk build and by the streaming
# rebuild (indexer/projection.py). `searchable` decides whether the provider has a document.
SOURCE_VIEW = """
CREATE VIEW search_document_source AS
SELECT
    p.user_id                                   AS provider_id,
    p.kind                                      AS kind,
    (u.active AND p.kyc_status <> 'rejected')   AS searchable,
    p.version                                   AS version,
    p.display_name                              AS display_name,
    p.headline                                  AS headline,
    p.city                                      AS city,
    p.country_code                              AS country_code,
    p.subjects                                  AS subjects,
    p.expertises                                AS expertises,
    p.languages                                 AS languages,
    p.hourly_rate_minor                         AS price_minor,
    p.currency                                  AS currency,
    p.rating_avg                                AS rating_avg,
    p.rating_count                              AS rating_count,
    coalesce(p.rating_avg, 0)::numeric(3, 2)    AS rating_sort,
    p.online                                    AS online,
    p.in_person                                 AS in_person,
    p.location                                  AS location,
    ST_Y(p.location::geometry)                  AS lat,
    ST_X(p.location::geometry)                  AS lng,
    coalesce(
        (SELECT range_agg(tstzrange(s.starts_at, s.ends_at))
           FROM availability_slots s
          WHERE s.provider_id = p.user_id AND s.status = 'open' AND s.ends_at > now()),
        '{}'::tstzmultirange
    )                                           AS availability,
    setweight(to_tsvector('educonnect_simple', p.display_name), 'A')
    || setweight(to_tsvector('educonnect_fr', t.terms || ' ' || p.headline), 'B')
    || setweight(to_tsvector('educonnect_en', t.terms || ' ' || p.headline), 'B')
    || setweight(to_tsvector('educonnect_simple', t.terms || ' ' || p.headline), 'B')
    || setweight(
           to_tsvector(
               CASE u.locale WHEN 'fr' THEN 'educonnect_fr' ELSE 'educonnect_en' END::regconfig,
               p.bio),
           'C')                                 AS search_vector
FROM provider_profiles p
JOIN users u ON u.id = p.user_id
CROSS JOIN LATERAL (
    SELECT coalesce(string_agg(c.terms, ' ' ORDER BY c.slug), '') AS terms
      FROM search_catalogue c
     WHERE c.slug = ANY (p.subjects) OR c.slug = ANY (p.expertises)
) t
"""


def _tutor_table(name: str) -> str:
    return f"""
        CREATE TABLE {name} (
            provider_id     uuid PRIMARY KEY,
            version         bigint NOT NULL,
            display_name    text NOT NULL,
            headline        text NOT NULL,
            city            text,
            country_code    char(2),
            subjects        text[] NOT NULL,
            languages       text[] NOT NULL,
            price_minor     integer NOT NULL,
            currency        char(3) NOT NULL,
            rating_avg      numeric(3, 2),
            rating_count    integer NOT NULL,
            rating_sort     numeric(3, 2) NOT NULL,
            online          boolean NOT NULL,
            in_person       boolean NOT NULL,
            location        geography(Point, 4326),
            lat             double precision,
            lng             double precision,
            availability    tstzmultirange NOT NULL,
            search_vector   tsvector NOT NULL,
            indexed_at      timestamptz NOT NULL DEFAULT now()
        )
    """


def _coach_table(name: str) -> str:
    return f"""
        CREATE TABLE {name} (
            provider_id     uuid PRIMARY KEY,
            version         bigint NOT NULL,
            kind            text NOT NULL CHECK (kind IN ('coach', 'mentor')),
            display_name    text NOT NULL,
            headline        text NOT NULL,
            city            text,
            country_code    char(2),
            expertises      text[] NOT NULL,
            languages       text[] NOT NULL,
            price_minor     integer NOT NULL,
            currency        char(3) NOT NULL,
            rating_avg      numeric(3, 2),
            rating_count    integer NOT NULL,
            rating_sort     numeric(3, 2) NOT NULL,
            online          boolean NOT NULL,
            in_person       boolean NOT NULL,
            availability    tstzmultirange NOT NULL,
            search_vector   tsvector NOT NULL,
            indexed_at      timestamptz NOT NULL DEFAULT now()
        )
    """


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE search_catalogue (
            slug        text PRIMARY KEY,
            facet       text NOT NULL CHECK (facet IN ('subject', 'expertise')),
            label_fr    text NOT NULL,
            label_en    text NOT NULL,
            terms       text NOT NULL
        )
        """
    )
    from profiles.catalogue import EXPERTISES, SUBJECTS, search_terms

    rows = [(e, "subject") for e in SUBJECTS] + [(e, "expertise") for e in EXPERTISES]
    values = ", ".join(
        "(" + ", ".join(_lit(v) for v in (e.slug, facet, e.fr, e.en, search_terms(e.slug))) + ")"
        for e, facet in rows
    )
    op.execute(
        f"INSERT INTO search_catalogue (slug, facet, label_fr, label_en, terms) VALUES {values}"
    )

    op.execute("DROP TABLE tutor_documents")
    op.execute("DROP TABLE coach_documents")
    op.execute(_tutor_table("tutor_documents"))
    op.execute(_coach_table("coach_documents"))
    for stmt in _document_indexes("tutor_documents", "coach_documents"):
        op.execute(stmt)
    op.execute(SOURCE_VIEW)


def _document_indexes(tutors: str, coaches: str) -> list[str]:
    """CREATE INDEX statements of the two document tables (also used for shadow tables).

    Index names derive from the table names, so a shadow table's indexes can be renamed
    along with it at swap time.
    """
    out = []
    for t in (tutors, coaches):
        # Narrow heap rows: the geo/facet scans never read the tsvector, keep it compressed
        # out of line (TOAST) instead of inline.
        out.append(f"ALTER TABLE {t} ALTER COLUMN search_vector SET STORAGE EXTERNAL")
        out.append(f"ALTER TABLE {t} SET (toast_tuple_target = 256)")
        out.append(f"CREATE INDEX {t}_search_idx ON {t} USING gin (search_vector)")
        out.append(f"CREATE INDEX {t}_languages_idx ON {t} USING gin (languages)")
        out.append(f"CREATE INDEX {t}_availability_idx ON {t} USING gist (availability)")
        out.append(f"CREATE INDEX {t}_rating_idx ON {t} (rating_sort DESC, provider_id)")
        out.append(f"CREATE INDEX {t}_price_idx ON {t} (price_minor, provider_id)")
    out.append(f"CREATE INDEX {tutors}_location_idx ON {tutors} USING gist (location)")
    out.append(f"CREATE INDEX {tutors}_subjects_idx ON {tutors} USING gin (subjects)")
    out.append(f"CREATE INDEX {coaches}_expertises_idx ON {coaches} USING gin (expertises)")
    return out


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS search_document_source")
    op.execute("DROP TABLE IF EXISTS tutor_documents")
    op.execute("DROP TABLE IF EXISTS coach_documents")
    op.execute("DROP TABLE IF EXISTS search_catalogue")
    # Back to the 0001 shape.
    op.execute(
        """
        CREATE TABLE tutor_documents (
            provider_id     uuid PRIMARY KEY,
            display_name    text NOT NULL,
            headline        text NOT NULL,
            city            text,
            country_code    char(2),
            subjects        text[] NOT NULL,
            languages       text[] NOT NULL,
            price_minor     integer NOT NULL,
            currency        char(3) NOT NULL,
            rating_avg      numeric(3, 2),
            rating_count    integer NOT NULL,
            online          boolean NOT NULL,
            in_person       boolean NOT NULL,
            location        geography(Point, 4326),
            lat             double precision,
            lng             double precision,
            search_vector   tsvector NOT NULL,
            availability    tstzmultirange NOT NULL,
            version         bigint NOT NULL,
            indexed_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX tutor_documents_location_idx ON tutor_documents USING gist (location)")
    op.execute(
        "CREATE INDEX tutor_documents_search_idx ON tutor_documents USING gin (search_vector)"
    )
    op.execute("CREATE INDEX tutor_documents_subjects_idx ON tutor_documents USING gin (subjects)")
    op.execute(
        "CREATE INDEX tutor_documents_languages_idx ON tutor_documents USING gin (languages)"
    )
    op.execute(
        "CREATE INDEX tutor_documents_availability_idx ON tutor_documents USING gist (availability)"
    )
    op.execute(
        """
        CREATE TABLE coach_documents (
            provider_id     uuid PRIMARY KEY,
            kind            text NOT NULL CHECK (kind IN ('coach', 'mentor')),
            display_name    text NOT NULL,
            headline        text NOT NULL,
            city            text,
            country_code    char(2),
            expertises      text[] NOT NULL,
            languages       text[] NOT NULL,
            price_minor     integer NOT NULL,
            currency        char(3) NOT NULL,
            rating_avg      numeric(3, 2),
            rating_count    integer NOT NULL,
            online          boolean NOT NULL,
            in_person       boolean NOT NULL,
            search_vector   tsvector NOT NULL,
            availability    tstzmultirange NOT NULL,
            version         bigint NOT NULL,
            indexed_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        "CREATE INDEX coach_documents_search_idx ON coach_documents USING gin (search_vector)"
    )
    op.execute(
        "CREATE INDEX coach_documents_expertises_idx ON coach_documents USING gin (expertises)"
    )
    op.execute(
        "CREATE INDEX coach_documents_languages_idx ON coach_documents USING gin (languages)"
    )
    op.execute(
        "CREATE INDEX coach_documents_availability_idx ON coach_documents USING gist (availability)"
    )
