"""Prometheus metrics of the outbox relay (exported by the relay process and the API)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "educonnect_indexer_events_total", "Outbox events applied, by consumer.", ["consumer"]
)
BATCHES = Counter(
    "educonnect_indexer_batches_total", "Batches committed, by consumer.", ["consumer"]
)
ERRORS = Counter(
    "educonnect_indexer_errors_total", "Batches that failed and were retried.", ["consumer"]
)
BATCH_SIZE = Histogram(
    "educonnect_indexer_batch_size",
    "Events per committed batch.",
    ["consumer"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_SECONDS = Histogram(
    "educonnect_indexer_batch_seconds",
    "Time to apply and commit one batch, in seconds.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
FRESHNESS = Histogram(
    "educonnect_indexer_freshness_seconds",
    "Time from a write's outbox insert (end of its transaction) to its document being "
    "committed in the search tables, in seconds.",
    ["consumer"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LAG_EVENTS = Gauge(
    "educonnect_indexer_lag_events", "Outbox events not yet applied, by consumer.", ["consumer"]
)
LAG_SECONDS = Gauge(
    "educonnect_indexer_lag_seconds",
    "Age in seconds of the oldest outbox event not yet applied (0 when caught up).",
    ["consumer"],
)
