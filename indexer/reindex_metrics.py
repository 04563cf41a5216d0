"""Prometheus metrics of full reindex runs (exported by the worker that runs them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter(
    "educonnect_reindex_runs_total",
    "Reindex runs that ended, by engine and outcome (succeeded, failed, canceled, lost).",
    ["engine", "outcome"],
)
DURATION = Histogram(
    "educonnect_reindex_duration_seconds",
    "Wall time of a reindex run from claim to swap (or failure), in seconds.",
    ["engine", "outcome"],
    buckets=(1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 300, 600, 1800),
)
PHASE_SECONDS = Histogram(
    "educonnect_reindex_phase_seconds",
    "Time spent in each phase of a reindex (snapshot, indexes, analyze, replay, swap), s.",
    ["engine", "phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300),
)
DOCUMENTS = Gauge(
    "educonnect_reindex_documents",
    "Documents loaded from the snapshot by the last successful run.",
    ["engine"],
)
DOCUMENTS_PER_SECOND = Gauge(
    "educonnect_reindex_documents_per_second",
    "Documents per second of the last successful run (documents / whole run duration).",
    ["engine"],
)
REPLAYED = Counter(
    "educonnect_reindex_replayed_events_total",
    "Outbox events replayed into shadow tables (events committed during a rebuild).",
    ["engine"],
)
