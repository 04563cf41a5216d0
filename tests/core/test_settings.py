"""Settings: environment variables, URL normalisation, validation."""

from __future__ import annotations

import pydantic
import pytest

from core.settings import Settings, libpq_url


def test_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://example:6380/3")
    monkeypatch.setenv("API_PORT", "9001")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    s = Settings(_env_file=None)
    assert s.redis_url == "redis://example:6380/3"
    assert s.api_port == 9001
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    "given",
    ["postgresql://u@h:5432/d", "postgres://u@h:5432/d", "postgresql+psycopg://u@h:5432/d"],
)
def test_database_url_is_pinned_to_psycopg(monkeypatch: pytest.MonkeyPatch, given: str) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    s = Settings(_env_file=None)
    assert s.database_url == "postgresql+psycopg://u@h:5432/d"
    assert s.libpq_database_url == "postgresql://u@h:5432/d"


@pytest.mark.parametrize(
    ("given", "libpq"),
    [
        ("postgresql+psycopg://u@h:5432/d", "postgresql://u@h:5432/d"),
        ("postgres+psycopg2://u@h/d?sslmode=require", "postgres://u@h/d?sslmode=require"),
        ("postgresql://u@h:5432/d", "postgresql://u@h:5432/d"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_libpq_url_drops_the_driver(given: str, libpq: str) -> None:
    assert libpq_url(given) == libpq


def test_search_reads_the_replica_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@primary/d")
    assert Settings(_env_file=None).libpq_search_url == "postgresql://u@primary/d"
    monkeypatch.setenv("DATABASE_READ_URL", "postgresql://u@replica/d")
    assert Settings(_env_file=None).libpq_search_url == "postgresql://u@replica/d"


def test_empty_read_url_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_READ_URL", "")
    assert Settings(_env_file=None).database_read_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("API_PORT", "0"),
        ("LOG_LEVEL", "LOUD"),
        ("DATABASE_POOL_SIZE", "-1"),
        ("SECRET_KEY", "short"),
    ],
)
def test_invalid_values_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError) as exc:
        Settings(_env_file=None)
    assert name.lower() in str(exc.value)


def test_env_example_documents_every_setting() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in text.splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    expected = {name.upper() for name in Settings.model_fields}
    assert expected <= documented, expected - documented
