"""Foundation: extensions, text search configurations, accounts, profiles, availability,
outbox and the two search document tables.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

ROLES = "'student', 'parent', 'tutor', 'coach', 'mentor', 'admin'"


def upgrade() -> None:
    for ext in ("postgis", "citext", "unaccent", "pg_trgm", "btree_gist"):
        op.execute(f"CREATE EXTENSION IF NOT EXISTS {ext}")

    # Accent- and case-folding text search configurations (French and English stems, plus a
    # 'simple' one for names). unaccent runs before the stemmer, so "mathématiques" and
    # "mathematiques" produce the same lexeme.
    for name, base, stem in (
        ("educonnect_fr", "french", "french_stem"),
        ("educonnect_en", "english", "english_stem"),
        ("educonnect_simple", "simple", "simple"),
    ):
        op.execute(f"CREATE TEXT SEARCH CONFIGURATION {name} ( COPY = {base} )")
        op.execute(
            f"ALTER TEXT SEARCH CONFIGURATION {name} ALTER MAPPING FOR "
            f"hword, hword_part, word WITH unaccent, {stem}"
        )

    op.execute(
        f"""
        CREATE TABLE users (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            email           citext NOT NULL UNIQUE,
            password_hash   text NOT NULL,
            full_name       text NOT NULL DEFAULT '',
            role            text NOT NULL CHECK (role IN ({ROLES})),
            locale          text NOT NULL DEFAULT 'fr' CHECK (locale IN ('fr', 'en')),
            active          boolean NOT NULL DEFAULT true,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX users_role_idx ON users (role, id)")

    op.execute(
        """
        CREATE TABLE parent_children (
            parent_id   uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            child_id    uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (parent_id, child_id),
            CHECK (parent_id <> child_id)
        )
        """
    )
    op.execute("CREATE INDEX parent_children_child_idx ON parent_children (child_id)")

    op.execute(
        """
        CREATE TABLE provider_profiles (
            user_id             uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
            kind                text NOT NULL CHECK (kind IN ('tutor', 'coach', 'mentor')),
            display_name        text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 120),
            headline            text NOT NULL DEFAULT '',
            bio                 text NOT NULL DEFAULT '',
            subjects            text[] NOT NULL DEFAULT '{}',
            expertises          text[] NOT NULL DEFAULT '{}',
            languages           text[] NOT NULL DEFAULT '{}',
            hourly_rate_minor   integer NOT NULL CHECK (hourly_rate_minor > 0),
            currency            char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            rating_avg          numeric(3, 2) CHECK (rating_avg BETWEEN 1 AND 5),
            rating_count        integer NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
            online              boolean NOT NULL DEFAULT true,
            in_person           boolean NOT NULL DEFAULT false,
            location            geography(Point, 4326),
            city                text,
            country_code        char(2),
            service_radius_km   integer CHECK (service_radius_km BETWEEN 0 AND 500),
            kyc_status          text NOT NULL DEFAULT 'pending'
                                CHECK (kyc_status IN ('pending', 'verified', 'rejected')),
            version             bigint NOT NULL DEFAULT 1,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            CHECK (online OR in_person),
            CHECK (NOT in_person OR location IS NOT NULL),
            CHECK ((rating_count = 0) = (rating_avg IS NULL))
        )
        """
    )
    op.execute("CREATE INDEX provider_profiles_kind_idx ON provider_profiles (kind)")

    op.execute(
        """
        CREATE TABLE availability_slots (
            id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            provider_id  uuid NOT NULL REFERENCES provider_profiles(user_id) ON DELETE CASCADE,
            starts_at    timestamptz NOT NULL,
            ends_at      timestamptz NOT NULL,
            mode         text NOT NULL CHECK (mode IN ('online', 'in_person')),
            capacity     integer NOT NULL DEFAULT 1 CHECK (capacity >= 1),
            status       text NOT NULL DEFAULT 'open'
                         CHECK (status IN ('open', 'closed', 'canceled')),
            created_at   timestamptz NOT NULL DEFAULT now(),
            CHECK (ends_at > starts_at),
            -- Slots of one provider never overlap (canceled slots do not count).
            CONSTRAINT availability_slots_no_overlap EXCLUDE USING gist (
                provider_id WITH =, tstzrange(starts_at, ends_at) WITH &&
            ) WHERE (status <> 'canceled')
        )
        """
    )
    op.execute(
        "CREATE INDEX availability_slots_provider_idx ON availability_slots (provider_id, starts_at)"
    )

    op.execute(
        """
        CREATE TABLE outbox (
            id              bigserial PRIMARY KEY,
            txid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
            aggregate_type  text NOT NULL,
            aggregate_id    text NOT NULL,
            event_type      text NOT NULL,
            payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at      timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # The relay reads in commit order: (txid, id) below the oldest running transaction.
    op.execute("CREATE INDEX outbox_txid_idx ON outbox (txid, id)")

    # Search documents: one denormalized row per active provider, rebuilt by the indexer.
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

    # What `educonnect seed` loaded last, so `make run` re-seeds only when asked for other data.
    op.execute(
        """
        CREATE TABLE seed_runs (
            id          bigserial PRIMARY KEY,
            params      jsonb NOT NULL,
            tutors      integer NOT NULL,
            coaches     integer NOT NULL,
            slots       integer NOT NULL,
            seconds     double precision NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    for table in (
        "seed_runs",
        "coach_documents",
        "tutor_documents",
        "outbox",
        "availability_slots",
        "provider_profiles",
        "parent_children",
        "users",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    for name in ("educonnect_fr", "educonnect_en", "educonnect_simple"):
        op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {name}")
    # Extensions stay: other databases objects may use them and dropping postgis is slow.
