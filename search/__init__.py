"""Tutor and coach search, engine-neutral: query models (`schemas`), the service (cache,
fallback, timing), facets, cursors, map geometry and the `SearchEngine` protocol
(`engine`). The engines live in `search.engines` (PostgreSQL, OpenSearch)."""
