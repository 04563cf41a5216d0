"""Application settings, read from the environment (and `.env`) with pydantic-settings.

Every field is documented in `.env.example`; `get_settings()` is the one accessor.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """EduConnect configuration.

    Values come from environment variables of the same name (case-insensitive) or from a
    `.env` file in the working directory. Invalid values raise `pydantic.ValidationError`
    at start-up, never later.
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    env: Literal["dev", "test", "prod"] = "dev"
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/educonnect"
    database_read_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_max_overflow: int = Field(default=10, ge=0, le=200)
    redis_url: str = "redis://127.0.0.1:6379/0"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    readiness_timeout_s: float = Field(default=2.0, gt=0, le=30)
    secret_key: str = Field(default="dev-only-change-me-0123456789abcdef", min_length=16)
    # Outbox relay (indexer/relay.py)
    indexer_partitions: int = Field(default=1, ge=1, le=64)
    indexer_batch_size: int = Field(default=1000, ge=1, le=20_000)
    indexer_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    indexer_metrics_port: int = Field(default=9108, ge=0, le=65535)
    indexer_metrics_host: str = "127.0.0.1"
    outbox_retention_s: float = Field(default=3600.0, ge=0)
    search_engine: Literal["postgres", "opensearch"] = "postgres"
    # OpenSearch (search/opensearch.py, indexer/opensearch_sink.py, indexer/opensearch_reindex.py)
    opensearch_url: str = "http://127.0.0.1:9200"
    opensearch_timeout_s: float = Field(default=2.0, gt=0, le=60)
    opensearch_bulk_timeout_s: float = Field(default=30.0, gt=0, le=600)
    opensearch_bulk_max_retries: int = Field(default=5, ge=0, le=20)
    opensearch_index_prefix: str = Field(default="", pattern=r"^[a-z0-9_-]{0,40}$")
    opensearch_replicas: int = Field(default=1, ge=0, le=10)
    opensearch_retry_after_s: float = Field(default=5.0, ge=0, le=600)
    search_cache_enabled: bool = True
    search_cache_ttl_s: int = Field(default=60, ge=1, le=86400)
    search_pool_min_size: int = Field(default=2, ge=1, le=100)
    search_pool_max_size: int = Field(default=10, ge=1, le=200)
    # the longest a search process goes without checking its block directory (seconds);
    # 0 = check on every query (no LISTEN connection), search/block_watch.py
    search_block_recheck_s: float = Field(default=1.0, ge=0, le=60)
    access_token_ttl_s: int = Field(default=900, ge=60, le=3600)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=3600, le=365 * 86_400)
    login_max_failures_per_account: int = Field(default=5, ge=1, le=1000)
    login_max_attempts_per_ip: int = Field(default=30, ge=1, le=100_000)
    login_rate_window_s: int = Field(default=900, ge=1, le=86_400)
    idempotency_ttl_s: int = Field(default=86_400, ge=86_400, le=30 * 86_400)
    idempotency_lock_timeout_s: int = Field(default=60, ge=1, le=3600)
    # Booking (booking/service.py): hold lifetime, minimum notice before a slot starts, the
    # beat sweep of lapsed holds, and how long a booking waits for a slot's row lock
    hold_ttl_s: int = Field(default=300, ge=30, le=3600)
    booking_min_notice_s: int = Field(default=7200, ge=0, le=30 * 86_400)
    booking_expiry_sweep_s: float = Field(default=30.0, gt=0, le=3600)
    booking_lock_timeout_ms: int = Field(default=3000, ge=10, le=60_000)
    # Web pages (api/web.py): map tiles as a Leaflet URL template; empty = no tiles
    map_tile_url: str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    map_tile_attribution: str = (
        '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors'
    )
    # Celery (core/celery_app.py): broker and result backend default to REDIS_URL.
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None
    celery_visibility_timeout_s: int = Field(default=7200, ge=60, le=7 * 86_400)
    celery_task_soft_time_limit_s: int = Field(default=1500, ge=1, le=86_400)
    celery_task_time_limit_s: int = Field(default=1800, ge=1, le=86_400)
    celery_result_expires_s: int = Field(default=7 * 86_400, ge=60)
    worker_metrics_port: int = Field(default=9109, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # Full reindex (indexer/reindex.py)
    reindex_batch_size: int = Field(default=5000, ge=1, le=100_000)
    reindex_lease_s: float = Field(default=60.0, ge=1, le=3600)
    reindex_queue_timeout_s: float = Field(default=900.0, ge=1, le=86_400)
    reindex_lock_timeout_s: float = Field(default=2.0, gt=0, le=60)
    reindex_swap_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    reindex_parallelism: int = Field(default=2, ge=1, le=32)
    reindex_maintenance_work_mem: str = Field(default="256MB", pattern=r"^[0-9]+(kB|MB|GB)$")

    # Payments (payments/): Stripe secret key; unset = the local stand-in (`standins/stripe`)
    # at STRIPE_API_BASE with STRIPE_STANDIN_API_KEY. STRIPE_API_BASE also overrides the real
    # API's address. Webhook signing secret (whsec_…) and the signature's tolerance (s).
    stripe_secret_key: str | None = None
    stripe_api_base: str | None = None
    stripe_standin_url: str = "http://127.0.0.1:12111"
    stripe_standin_api_key: str = "sk_test_standin"
    stripe_webhook_secret: str = "whsec_standin"  # noqa: S105 - the stand-in's; set in prod
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1, le=3600)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    stripe_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Money rules: a flat service fee added to every payment (minor units of the booking's
    # currency, 0 = none), the platform's commission on the price (basis points), and a
    # flat fee kept from every payout (minor units).
    service_fee_minor: int = Field(default=0, ge=0)
    platform_fee_bps: int = Field(default=1500, ge=0, le=10_000)
    payout_fee_minor: int = Field(default=0, ge=0)
    # Webhook processing task: attempts before an event is left as a dead letter (its row in
    # webhook_events keeps last_error), and the first retry delay (doubles, capped at 300 s).
    payments_task_max_retries: int = Field(default=8, ge=0, le=50)
    payments_task_retry_s: float = Field(default=2.0, gt=0, le=300)

    # Credits (credits/): life of granted credits (months; a plan may set its own), the
    # notice before they lapse (days), the nightly expiry job's hour (UTC) and the daily
    # reconciliation of subscriptions whose period ended (hour, UTC).
    credits_validity_months: int = Field(default=12, ge=1, le=60)
    credits_expiry_notice_days: int = Field(default=7, ge=0, le=60)
    credits_expiry_hour_utc: int = Field(default=2, ge=0, le=23)
    credits_allocation_hour_utc: int = Field(default=3, ge=0, le=23)

    @field_validator("database_url", "database_read_url")
    @classmethod
    def _psycopg_driver(cls, value: str | None) -> str | None:
        """Accept `postgresql://` and `postgres://` URLs and pin the psycopg 3 driver."""
        if value is None or value == "":
            return None
        return sqlalchemy_url(value)

    @model_validator(mode="after")
    def _celery_limits(self) -> Settings:
        """With `acks_late`, a task still running when the Redis visibility timeout expires
        is delivered a second time: the timeout must exceed the hard time limit, which
        must exceed the soft one."""
        if not self.celery_task_soft_time_limit_s < self.celery_task_time_limit_s:
            raise ValueError("celery_task_soft_time_limit_s must be < celery_task_time_limit_s")
        if not self.celery_task_time_limit_s < self.celery_visibility_timeout_s:
            raise ValueError("celery_task_time_limit_s must be < celery_visibility_timeout_s")
        return self

    @property
    def celery_broker(self) -> str:
        """The Celery broker URL: `CELERY_BROKER_URL`, else `REDIS_URL`."""
        return self.celery_broker_url or self.redis_url

    @property
    def celery_backend(self) -> str:
        """The Celery result backend URL: `CELERY_RESULT_BACKEND`, else the broker's."""
        return self.celery_result_backend or self.celery_broker

    @property
    def stripe_uses_standin(self) -> bool:
        """True when no `STRIPE_SECRET_KEY` is set: the SDK talks to the local stand-in."""
        return not self.stripe_secret_key

    @property
    def libpq_database_url(self) -> str:
        """`database_url` without the SQLAlchemy driver suffix, for psycopg and psql."""
        return self.database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` or `postgres://…` → `postgresql+psycopg://…` (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once; tests call `get_settings.cache_clear()`)."""
    return Settings()
