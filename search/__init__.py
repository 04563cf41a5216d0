"""Tutor and coach search: query models, engines (PostgreSQL now, OpenSearch later),
facets, cursor pagination and the Redis cache."""
