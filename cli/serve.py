"""`educonnect serve`: the HTTP API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

APP = "api.app:create_app"


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default API_PORT)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    reload: Annotated[
        bool, typer.Option(help="Restart on code changes (development; one process)")
    ] = False,
) -> None:
    """Serve the HTTP API with uvicorn.

    `uvicorn.run` on the app factory `api.app:create_app`. `--workers N` starts N
    processes sharing one listening socket (uvicorn's own supervisor). In a container,
    run one process per container and let the load balancer spread the connections
    (docker-compose.yml). Stops on SIGINT/SIGTERM after the requests in flight are
    answered.
    """
    import uvicorn

    from core.logging import configure_logging
    from core.settings import get_settings

    if reload and workers > 1:
        raise typer.BadParameter("--reload runs one process: leave out --workers")
    configure_logging()
    s = get_settings()
    uvicorn.run(
        APP,
        factory=True,
        host=host or s.api_host,
        port=port or s.api_port,
        workers=workers,
        reload=reload,
        # logging is ours (structlog, `core.logging`), and so is the access log line
        # (`api.middleware`, with the request id)
        log_config=None,
        access_log=False,
    )
