"""Structured logging with structlog: JSON lines carrying the request id.

`configure_logging()` routes both structlog and the standard library (uvicorn, alembic,
SQLAlchemy) through one JSON renderer. The request id is bound per request with
`structlog.contextvars` (see `api/middleware.py`), so every line logged while serving a
request carries it.
"""

from __future__ import annotations

import logging
import sys

import structlog

from core.settings import get_settings


def configure_logging(*, json: bool | None = None, level: str | None = None) -> None:
    """Configure structlog and stdlib logging once per process.

    `json=False` renders human-readable console lines (the CLI); the default follows
    `LOG_JSON`.
    """
    s = get_settings()
    use_json = s.log_json if json is None else json
    log_level = getattr(logging, (level or s.log_level).upper())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(log_level),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's access log duplicates our request log line (which has the request id)
    logging.getLogger("uvicorn.access").disabled = True
    # The JSON lines carry the event dict only: skip the per-record work the stdlib does
    # for fields nothing renders (the caller's frame — a walk up the whole asyncio stack on
    # every access log line — thread, process names). The logging HOWTO's "Optimization".
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; `name` is the emitting module."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]
