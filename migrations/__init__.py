"""Alembic migrations: `env.py` and `versions/`. The schema never changes by hand."""
