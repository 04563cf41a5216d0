"""The PostgreSQL search engine (`engine.PostgresEngine`) and what only it uses: the query
plan both paths share (`plan`), its two query paths (`sql_path`, `block_path`), the facet
blocks (`blocks`, their record defined once in `record_layout`), the block directory and
its watch (`block_sync`, `block_watch`), the text match cache (`text_cache`) and the C
kernels (`_kernels.c`).

Nothing is imported here, so the indexer and `setup.py` can import one module of the
package without the engine's dependencies."""
