"""The search engines behind `search.engine.SearchEngine`: `postgres` (SQL over the search
tables, with the facet blocks and their C kernels) and `opensearch`."""
