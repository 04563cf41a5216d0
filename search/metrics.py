"""Search metrics (Prometheus, default registry, so `/metrics` exports them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CACHE_LOOKUPS = Counter(
    "educonnect_search_cache_total",
    "Search cache lookups by endpoint and result (hit, miss, error = Redis unavailable).",
    ["endpoint", "result"],
)
ENGINE_LATENCY = Histogram(
    "educonnect_search_engine_duration_seconds",
    "Time spent in the search engine (cache misses), by engine and endpoint.",
    ["engine", "endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
DEGRADED = Counter(
    "educonnect_search_degraded_total",
    "Search requests answered without the cache because Redis failed.",
    ["endpoint"],
)
