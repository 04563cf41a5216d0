"""Alembic environment: runs revisions online against `DATABASE_URL` (psycopg 3).

The URL comes from the Alembic config's `sqlalchemy.url` when set (tests, the CLI pass
the database they migrate) and otherwise from the application settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from core.settings import get_settings

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().database_url
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=None, transaction_per_migration=True
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
