"""Application settings, read from the environment (and `.env`) with pydantic-settings.

Every field is documented in `.env.example`; `get_settings()` is the one accessor.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.money import is_currency


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
    # OpenSearch (search/engines/opensearch/, indexer/opensearch_sink.py,
    # indexer/opensearch_reindex.py)
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
    # 0 = check on every query (no LISTEN connection), search/engines/postgres/block_watch.py
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
    # Web pages (api/pages.py): map tiles as a Leaflet URL template; empty = no tiles
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
    # An advisory lock key a run waits on before its swap (unset: no wait). Whoever holds
    # that lock keeps every run at the start of its swap phase (tests and drills).
    reindex_swap_gate: int | None = None

    # Payments (payments/): Stripe secret key; unset = the local stand-in (`standins/stripe`)
    # at STRIPE_API_BASE with STRIPE_STANDIN_API_KEY. STRIPE_API_BASE also overrides the real
    # API's address. Webhook signing secret (whsec_…) and the signature's tolerance (s).
    stripe_secret_key: str | None = None
    # The web pages' Payment Element (pk_test_… / pk_live_…); unset: their labelled
    # test-payment step against the stand-in instead
    stripe_publishable_key: str | None = None
    stripe_api_base: str | None = None
    stripe_standin_url: str = "http://127.0.0.1:12111"
    stripe_standin_api_key: str = "sk_test_standin"
    stripe_webhook_secret: str = "whsec_standin"  # noqa: S105 - the stand-in's; set in prod
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1, le=3600)
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    stripe_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # Money rules: the service fee the payer pays on top of the price, a rate of the price
    # (basis points) plus a fixed part per currency (`EUR:150,XOF:100,TND:500`, minor units
    # of that currency; a currency not listed has no fixed part), see
    # `payments.ledger.service_fee`; the platform's commission on the price (basis points);
    # a flat fee kept from every payout (minor units).
    service_fee_bps: int = Field(default=0, ge=0, le=10_000)
    service_fee_minor: Annotated[dict[str, int], NoDecode] = Field(default_factory=dict)
    platform_fee_bps: int = Field(default=1500, ge=0, le=10_000)
    payout_fee_minor: int = Field(default=0, ge=0)
    # Webhook processing task: attempts before an event is left as a dead letter (its row in
    # webhook_events keeps last_error), and the first retry delay (doubles, capped at 300 s).
    payments_task_max_retries: int = Field(default=8, ge=0, le=50)
    payments_task_retry_s: float = Field(default=2.0, gt=0, le=300)
    # Beat sweep of what a dead process or a lost task left (unprocessed webhook events,
    # pending refunds, open intents of canceled bookings): its period, and the age (s) at
    # which such work counts as left.
    payments_sweep_s: float = Field(default=60.0, gt=0, le=3600)

    # Notifications (notifications/): delivery attempts before a row is dead-lettered, the
    # first retry delay (doubles per attempt, equal jitter) and its cap (s; the settings
    # refuse a cap at or above CELERY_VISIBILITY_TIMEOUT_S: a countdown past it would be
    # redelivered by Redis before it is due), the lease of a claimed row (s), the beat
    # periods of the reminder and stale-row sweeps (s).
    notifications_max_attempts: int = Field(default=5, ge=1, le=50)
    notifications_retry_base_s: float = Field(default=30.0, gt=0, le=3600)
    notifications_retry_max_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    notifications_claim_lease_s: float = Field(default=600.0, ge=1, le=86_400)
    notifications_reminder_sweep_s: float = Field(default=300.0, gt=0, le=3600)
    notifications_stale_sweep_s: float = Field(default=60.0, gt=0, le=3600)
    notifications_poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Email over SMTP (notifications/channels/email.py); `make run` starts a local sink
    # (`python -m standins.smtp`) on SMTP_PORT.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=120)
    email_from: str = "EduConnect <no-reply@educonnect.dev>"
    # SMS through Twilio: unset TWILIO_ACCOUNT_SID = the local stand-in (standins/twilio)
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from_number: str = "+15005550006"
    twilio_standin_url: str = "http://127.0.0.1:12112"
    # Push through FCM (firebase-admin): unset FCM_CREDENTIALS_FILE = the local stand-in
    # (standins/fcm) with a throw-away service account whose token URI is the stand-in's
    fcm_credentials_file: str | None = None
    fcm_standin_url: str = "http://127.0.0.1:12113"
    fcm_standin_project: str = "educonnect-standin"
    # Live updates (api/routers/live.py): events kept per slot/provider stream for
    # Last-Event-ID resume, and the SSE keep-alive comment period (s)
    live_stream_maxlen: int = Field(default=200, ge=10, le=100_000)
    live_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    # Video sessions (sessions/, LiveKit): the server URL clients connect to (ws/wss; the
    # server API uses the same host over http/https), the API key and secret (unset: no
    # video, token requests answer 503 `video_unavailable`; `make run` then starts the local
    # stand-in, standins/livekit), and the join window around a booking in seconds.
    livekit_url: str = "ws://127.0.0.1:7880"
    livekit_api_key: str | None = None
    livekit_api_secret: str | None = None
    livekit_timeout_s: float = Field(default=5.0, gt=0, le=60)
    session_join_before_s: int = Field(default=900, ge=0, le=86_400)
    session_join_after_s: int = Field(default=900, ge=0, le=86_400)
    # seconds each side must be connected during the lesson for it to count as attended
    session_min_presence_s: int = Field(default=60, ge=0, le=86_400)
    # the Celery beat period of the room clean-up and attendance settlement sweep (seconds)
    session_sweep_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # Reviews (reviews/service.py): how long after a completed session its review may be
    # posted, how long it stays editable, and m of the damped rating sort key
    # (v·R + m·C) / (v + m), the IMDb weighted rating (C = the platform mean).
    review_window_s: int = Field(default=14 * 86_400, ge=60, le=365 * 86_400)
    review_edit_window_s: int = Field(default=48 * 3600, ge=0, le=30 * 86_400)
    rating_prior_weight: int = Field(default=10, ge=0, le=10_000)
    rating_prior_refresh_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    # KYC documents (admin/kyc.py, core/storage.py): largest upload in bytes; where files go
    # (`local`: STORAGE_DIR; `s3`: S3_BUCKET on S3_ENDPOINT_URL, e.g. MinIO, through boto3).
    kyc_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: str = "var/storage"
    s3_endpoint_url: str | None = None
    s3_bucket: str = "educonnect-kyc"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
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

    @field_validator("service_fee_minor", mode="before")
    @classmethod
    def _fee_per_currency(cls, value: object) -> object:
        """`EUR:150,XOF:100` (or a mapping) → `{"EUR": 150, "XOF": 100}`: minor units per
        ISO 4217 currency. A bare number is refused unless 0 (= no fixed part): one number
        means 1.50 EUR but 150 F CFA or 0.150 DT."""
        if isinstance(value, int | str) and str(value).strip().isdigit():
            if int(str(value).strip()) == 0:
                return {}
            raise ValueError(
                "SERVICE_FEE_MINOR is per currency, e.g. `EUR:150,XOF:100,TND:500`"
                " (one number would mean another amount in every currency)"
            )
        if isinstance(value, str):
            pairs = [p.split(":", 1) for p in value.replace(" ", "").split(",") if p]
            if any(len(p) != 2 or not p[1].isdigit() for p in pairs):
                raise ValueError("SERVICE_FEE_MINOR: `CUR:amount` pairs, e.g. `EUR:150,XOF:100`")
            value = {c: int(a) for c, a in pairs}
        if isinstance(value, dict):
            out = {str(c).upper(): int(a) for c, a in value.items()}
            bad = [c for c, a in out.items() if not is_currency(c) or a < 0]
            if bad:
                raise ValueError(f"SERVICE_FEE_MINOR: unknown currency or negative amount: {bad}")
            return out
        return value

    @model_validator(mode="after")
    def _celery_limits(self) -> Settings:
        """With `acks_late`, a task still running when the Redis visibility timeout expires
        is delivered a second time: the timeout must exceed the hard time limit, which
        must exceed the soft one."""
        if not self.celery_task_soft_time_limit_s < self.celery_task_time_limit_s:
            raise ValueError("celery_task_soft_time_limit_s must be < celery_task_time_limit_s")
        if not self.celery_task_time_limit_s < self.celery_visibility_timeout_s:
            raise ValueError("celery_task_time_limit_s must be < celery_visibility_timeout_s")
        # payments' retries are capped at 300 s (payments/tasks.py)
        longest = max(self.notifications_retry_max_s, 300.0)
        if not longest < self.celery_visibility_timeout_s:
            raise ValueError(
                "every task countdown (notifications_retry_max_s, payments retries) must be"
                " < celery_visibility_timeout_s"
            )
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
        return libpq_url(self.database_url)

    @property
    def libpq_search_url(self) -> str:
        """The libpq URL search reads use: `database_read_url` (a streaming replica) when
        set, else `database_url`."""
        return libpq_url(self.database_read_url or self.database_url)


def sqlalchemy_url(url: str) -> str:
    """`postgresql://…` or `postgres://…` → `postgresql+psycopg://…` (psycopg 3 driver)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as libpq reads it: `postgresql+psycopg://…` → `postgresql://…`
    (any `+driver` suffix is dropped); other URLs are returned unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.split("+", 1)[0] in ("postgresql", "postgres"):
        return scheme.split("+", 1)[0] + "://" + rest
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once; tests call `get_settings.cache_clear()`)."""
    return Settings()
