"""Programmatic Alembic: `upgrade`/`downgrade`/`current` against a database URL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool

from core.settings import get_settings, sqlalchemy_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """An Alembic `Config` for our `migrations/` folder bound to `database_url`."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = sqlalchemy_url(database_url) if database_url else get_settings().database_url
    # ConfigParser interpolation: a literal % in a password must be doubled
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(revision: str = "head", database_url: str | None = None) -> None:
    """Apply migrations up to `revision` (default: the newest)."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(revision: str, database_url: str | None = None) -> None:
    """Revert migrations down to `revision` (`base` reverts them all)."""
    command.downgrade(alembic_config(database_url), revision)


def current_revision(database_url: str | None = None) -> str | None:
    """The revision the database is at, or None for an unmigrated database."""
    url = sqlalchemy_url(database_url) if database_url else get_settings().database_url
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
