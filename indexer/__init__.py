"""The indexer: projections (provider → search document) and, later, the outbox relay,
sinks and reindex tasks."""
