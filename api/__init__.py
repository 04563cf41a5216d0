"""The edges: the HTTP API (FastAPI app factory, routers, error handlers) and the CLI."""
