"""Accounts: refresh tokens (hashed, rotating families), idempotency keys, audit log.

Revision ID: 0003_accounts
Revises: 0002_search
Create Date: 2026-11-21
"""

from __future__ import annotations

from alembic import op

revision = "0003_accounts"
down_revision = "0002_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Opaque refresh tokens, stored as SHA-256 hex digests. Every login starts a family;
    # each refresh marks the presented token `rotated_at` and issues a successor in the
    # same family. Presenting a rotated token again is a reuse: the whole family is revoked.
    op.execute(
        """
        CREATE TABLE refresh_tokens (
            id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
            family_id   uuid NOT NULL,
            token_hash  text NOT NULL UNIQUE CHECK (length(token_hash) = 64),
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL,
            rotated_at  timestamptz,
            revoked_at  timestamptz,
            CHECK (expires_at > created_at)
        )
        """
    )
    op.execute("CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id)")

    # IETF httpapi Idempotency-Key: one row per (principal, key). The claim is committed
    # before the work starts (state 'in_progress'), the response is stored afterwards
    # ('completed') and replayed until `expires_at`.
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            principal     text NOT NULL,
            key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
            fingerprint   text NOT NULL,
            state         text NOT NULL CHECK (state IN ('in_progress', 'completed')),
            status        integer,
            body          bytea,
            headers       jsonb,
            created_at    timestamptz NOT NULL DEFAULT now(),
            locked_until  timestamptz NOT NULL,
            expires_at    timestamptz NOT NULL,
            PRIMARY KEY (principal, key),
            CHECK ((state = 'completed') = (status IS NOT NULL))
        )
        """
    )
    op.execute("CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at)")

    # Who did what to which entity, with the state before and after. No foreign key on the
    # actor: audit rows outlive the accounts they mention.
    op.execute(
        """
        CREATE TABLE audit_log (
            id           bigserial PRIMARY KEY,
            actor        uuid,
            action       text NOT NULL,
            entity_type  text NOT NULL,
            entity_id    text NOT NULL,
            before       jsonb,
            after        jsonb,
            at           timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX audit_log_entity_idx ON audit_log (entity_type, entity_id, at)")
    op.execute("CREATE INDEX audit_log_actor_idx ON audit_log (actor, at)")


def downgrade() -> None:
    for table in ("audit_log", "idempotency_keys", "refresh_tokens"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
