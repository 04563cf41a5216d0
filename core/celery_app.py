"""The Celery application (`celery -A core.celery_app worker`).

Broker and result backend are Redis (`CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND`, both
defaulting to `REDIS_URL`; Redis must run with `maxmemory-policy noeviction`, or it may
evict queued tasks). Tasks live in each domain's `tasks.py` (thin shims over services) and
are listed in `TASK_MODULES`.

Delivery policy, decided once for every task:

- JSON only (`task_serializer`, `result_serializer`, `accept_content`): no pickle from the
  broker, arguments are plain ids and strings.
- `task_acks_late=True`: a message is acknowledged after the task returns, so a worker
  that dies mid-task (SIGKILL, OOM, lost node) leaves the message unacknowledged and Redis
  hands it out again once `visibility_timeout` has passed. Tasks are therefore idempotent
  (a reindex re-runs from a fresh snapshot; a redelivered reindex whose run already ended
  does nothing).
- `task_reject_on_worker_lost=False` (Celery's default, set explicitly): when only the pool
  *child* dies (the main process survives and sees `WorkerLostError`), the message is acked
  and the task recorded as failed instead of being requeued at once. Requeueing would loop
  on a poison task (e.g. one that always exhausts memory) with no dead-letter queue on
  Redis; our failed runs stay in PostgreSQL (`reindex_runs`) and an admin or the caller
  retries. A whole worker lost (SIGKILL of the main process) is still redelivered after
  the visibility timeout, which the idempotent tasks absorb.
- Time limits: soft (`SoftTimeLimitExceeded` raised in the task, which cleans up) < hard
  (the pool process is killed) < `visibility_timeout`. With late acks a task still running
  when the visibility timeout expires would be delivered to a second worker, so the
  settings refuse a hard limit at or above it (`core.settings`). The same
  `visibility_timeout` is set for the broker and the result backend transport options.
- `worker_prefetch_multiplier=1`: a worker reserves one message per process, so a long
  reindex never sits on messages other workers could run.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals
from celery.schedules import crontab

from core.settings import Settings, get_settings

TASK_MODULES = (
    "indexer.tasks",
    "booking.tasks",
    "payments.tasks",
    "sessions.tasks",
    "notifications.tasks",
    "reviews.tasks",
    "credits.tasks",
)


def celery_config(s: Settings) -> dict[str, Any]:
    """The Celery configuration for settings `s` (a plain dict, testable)."""
    transport = {"visibility_timeout": s.celery_visibility_timeout_s}
    return {
        "broker_url": s.celery_broker,
        "result_backend": s.celery_backend,
        "broker_transport_options": dict(transport),
        "result_backend_transport_options": dict(transport),
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": False,
        "task_acks_on_failure_or_timeout": True,
        "task_track_started": True,
        "task_soft_time_limit": s.celery_task_soft_time_limit_s,
        "task_time_limit": s.celery_task_time_limit_s,
        "result_expires": s.celery_result_expires_s,
        "result_extended": True,
        "worker_prefetch_multiplier": 1,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "enable_utc": True,
        "timezone": "UTC",
        # `celery -A core.celery_app beat`: periodic tasks. Lapsed holds stop counting by
        # time alone; this sweep only settles their state and tells the indexer.
        "beat_schedule": {
            "booking-expire-holds": {
                "task": "booking.expire_holds",
                "schedule": s.booking_expiry_sweep_s,
                # a sweep not started within one period is superseded by the next one
                "options": {"expires": s.booking_expiry_sweep_s},
            },
            # reminders 24 h / 1 h before a session (each sent once: claimed per booking)
            "notifications-reminders": {
                "task": "notifications.send_reminders",
                "schedule": s.notifications_reminder_sweep_s,
                "options": {"expires": s.notifications_reminder_sweep_s},
            },
            # deliveries whose task was lost (relay or worker died at the wrong moment)
            "notifications-sweep": {
                "task": "notifications.sweep",
                "schedule": s.notifications_stale_sweep_s,
                "options": {"expires": s.notifications_stale_sweep_s},
            },
            # video rooms to release or close, lessons to settle (sessions/tasks.py)
            "sessions-sweep": {
                "task": "sessions.sweep",
                "schedule": s.session_sweep_interval_s,
                "options": {"expires": s.session_sweep_interval_s},
            },
            # payments: webhook events, refunds and intent cancels nobody finished
            "payments-sweep": {
                "task": "payments.sweep",
                "schedule": s.payments_sweep_s,
                "options": {"expires": s.payments_sweep_s},
            },
            # C of the damped rating sort key, the platform mean (reviews/tasks.py)
            "reviews-rating-prior": {
                "task": "reviews.refresh_rating_prior",
                "schedule": s.rating_prior_refresh_s,
                "options": {"expires": s.rating_prior_refresh_s},
            },
            # credits: the nightly expiry (and week-ahead notices), and the daily catch-up
            # of subscription invoices whose webhooks were missed
            "credits-expire": {
                "task": "credits.expire",
                "schedule": crontab(minute=0, hour=s.credits_expiry_hour_utc),
            },
            "credits-allocate-monthly": {
                "task": "credits.allocate_monthly",
                "schedule": crontab(minute=15, hour=s.credits_allocation_hour_utc),
            },
        },
    }


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured from `settings` (default: the process settings)."""
    s = settings or get_settings()
    celery = Celery("educonnect", include=list(TASK_MODULES))
    celery.conf.update(celery_config(s))
    return celery


app = create_celery()


def _setup_logging(**_: Any) -> None:
    """Route Celery's logging through our structlog JSON configuration."""
    from core.logging import configure_logging

    configure_logging()


def _start_metrics(**_: Any) -> None:
    """Serve the pool process's Prometheus metrics on `WORKER_METRICS_PORT` (0 = off).

    Metrics are per process: run the worker with `--concurrency 1` (or one port per worker)
    to scrape every run's metrics.
    """
    _serve_metrics()


def _start_metrics_solo(sender: Any = None, **_: Any) -> None:
    """With the solo pool the main process runs the tasks: serve its metrics instead."""
    pool = getattr(getattr(sender, "pool_cls", None), "__module__", "") or ""
    if pool.endswith(".solo") or pool.endswith(".threads"):
        _serve_metrics()


_metrics_served_by: set[int] = set()


def _serve_metrics() -> None:
    import os

    from prometheus_client import start_http_server

    from core.logging import get_logger

    s = get_settings()
    if not s.worker_metrics_port or os.getpid() in _metrics_served_by:
        return
    _metrics_served_by.add(os.getpid())
    try:
        start_http_server(s.worker_metrics_port, addr=s.worker_metrics_host)
    except OSError as exc:
        get_logger(__name__).warning(
            "worker_metrics_unavailable", port=s.worker_metrics_port, error=str(exc)
        )


signals.setup_logging.connect(_setup_logging, weak=False)
signals.worker_process_init.connect(_start_metrics, weak=False)
signals.worker_init.connect(_start_metrics_solo, weak=False)
