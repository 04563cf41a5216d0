"""The indexer: outbox relay, projections (provider -> search document), sinks, reindex."""
