"""Indexer status for operators: lag per consumer, used by `/metrics` and the CLI."""

from __future__ import annotations

from typing import Any

import psycopg

from indexer import metrics
from indexer import repository as repo


def refresh_lag_metrics(conn: psycopg.Connection[Any]) -> list[repo.Lag]:
    """Compute every consumer's lag (events, seconds) and set the lag gauges of this
    process's registry. Returns the lags, by consumer name."""
    consumers = sorted({cp.consumer for cp in repo.checkpoints(conn)})
    lags = [repo.consumer_lag(conn, c) for c in consumers]
    for lag in lags:
        metrics.LAG_EVENTS.labels(lag.consumer).set(lag.events)
        metrics.LAG_SECONDS.labels(lag.consumer).set(lag.seconds)
    return lags
