"""The OpenSearch search engine (`engine.OpenSearchEngine`) and its index layout
(`index`: aliases, versioned indices, templates), shared with the indexer."""
