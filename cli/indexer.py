"""`educonnect indexer …`: run the outbox relay, show its status, repartition it."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from cli.common import connect
from core.bootstrap import CONSUMERS, invalidate_search_cache, make_sink
from core.logging import configure_logging, get_logger
from core.settings import get_settings

indexer_app = typer.Typer(no_args_is_help=True, help="The outbox relay (streaming indexer).")
console = Console()  # results (the status table, a drain's count) go to stdout
log = get_logger(__name__)


def _samples_writer(path: Path) -> Callable[[Sequence[Any], datetime], None]:
    out = path.open("a", buffering=1)

    def write(events: Sequence[Any], visible_at: datetime) -> None:
        v = visible_at.timestamp()
        out.write("".join(f"{e.created_at.timestamp():.6f} {v:.6f}\n" for e in events))

    return write


@indexer_app.command("run")
def run(
    consumer: Annotated[
        str, typer.Option(help="Consumer (sink): postgres | opensearch")
    ] = "postgres",
    partitions: Annotated[
        int | None, typer.Option(min=1, help="Default INDEXER_PARTITIONS")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Default INDEXER_BATCH_SIZE")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Drain what is there, then exit")] = False,
    samples_file: Annotated[
        Path | None,
        typer.Option(help="Append 'created_at visible_at' (epoch s) per event (benchmarks)"),
    ] = None,
) -> None:
    """Apply outbox events to a search engine (the PostgreSQL search tables, or
    OpenSearch with `--consumer opensearch`: its own checkpoints, so one engine being down
    never blocks the other), in commit order, until stopped (SIGTERM)."""
    from prometheus_client import start_http_server

    from indexer.relay import Relay, RelayConfig, StopFlag, supervise

    configure_logging()
    s = get_settings()
    if consumer not in CONSUMERS:
        raise typer.BadParameter(f"unknown consumer {consumer!r} (known: {', '.join(CONSUMERS)})")
    cfg = RelayConfig(
        consumer=consumer,
        partitions=partitions or s.indexer_partitions,
        batch_size=batch_size or s.indexer_batch_size,
        poll_interval_s=s.indexer_poll_interval_s,
        retention_s=s.outbox_retention_s,
    )

    def open_relay() -> tuple[Relay, psycopg.Connection[Any]]:
        conn = connect("educonnect-indexer")
        listen = connect("educonnect-indexer-listen")
        relay = Relay(
            conn,
            make_sink(consumer),
            cfg,
            on_changes=functools.partial(invalidate_search_cache, consumer),
            on_batch=_samples_writer(samples_file) if samples_file else None,
        )
        return relay, listen

    try:
        relay, listen = open_relay()
    except ValueError as exc:  # e.g. another partition count: a usage error, exit 2
        raise typer.BadParameter(str(exc)) from None
    if once:
        listen.close()
        t0 = time.perf_counter()
        n = relay.drain()
        seconds = time.perf_counter() - t0
        relay.maintenance(force=True)
        console.print(
            f"applied {n} events in {seconds:.2f} s ({n / max(seconds, 1e-9):,.0f} events/s)"
        )
        return
    relay.conn.close()
    listen.close()
    if s.indexer_metrics_port:
        start_http_server(s.indexer_metrics_port, addr=s.indexer_metrics_host)
    log.info("indexer_started", consumer=consumer, partitions=cfg.partitions)
    # Reconnects with backoff when the database goes away; exits only on SIGTERM/SIGINT.
    supervise(open_relay, stop=StopFlag())
    log.info("indexer_stopped", consumer=consumer)


@indexer_app.command("status")
def status() -> None:
    """Checkpoints, lag (events and seconds) and outbox size of every consumer."""
    from indexer import repository as repo

    with connect() as conn:
        cps = repo.checkpoints(conn)
        size = conn.execute("SELECT count(*) FROM outbox").fetchone()
        consumers = sorted({c.consumer for c in cps})
        lags = {c: repo.consumer_lag(conn, c) for c in consumers}
    table = Table("consumer", "partitions", "applied", "lag events", "lag s", "last batch")
    for c in consumers:
        mine = [cp for cp in cps if cp.consumer == c]
        table.add_row(
            c,
            str(mine[0].partitions),
            str(lags[c].applied),
            str(lags[c].events),
            f"{lags[c].seconds:.2f}",
            max(cp.updated_at for cp in mine).isoformat(timespec="seconds"),
        )
    console.print(table)
    console.print(f"outbox rows kept: {size[0] if size else 0}")
    if not consumers:
        console.print("no consumer has run yet")


@indexer_app.command("reset")
def reset(
    consumer: Annotated[str, typer.Option(help="Consumer to repartition")] = "postgres",
    partitions: Annotated[int, typer.Option(min=1, help="New partition count")] = 1,
) -> None:
    """Repartition a drained consumer (stop its relays first). Refuses while events are
    pending (exit 2).

    The new checkpoints start at the *lowest* old one: below it every transaction had
    finished when it was written, so nothing can be skipped; events between the lowest and
    the highest are applied again, which the idempotent sinks absorb."""
    from indexer import repository as repo

    with connect() as conn, conn.transaction():
        conn.execute("LOCK TABLE indexer_checkpoints IN EXCLUSIVE MODE")
        lag = repo.consumer_lag(conn, consumer)
        if lag.events:
            raise typer.BadParameter(f"{lag.events} events pending for {consumer!r}; drain first")
        conn.execute(
            """
            WITH old AS (DELETE FROM indexer_checkpoints WHERE consumer = %(c)s RETURNING *),
            top AS (SELECT txid, outbox_id FROM old ORDER BY txid, outbox_id LIMIT 1),
            total AS (SELECT coalesce(sum(events), 0) AS events FROM old)
            INSERT INTO indexer_checkpoints (consumer, partition, partitions, txid, outbox_id, events)
            SELECT %(c)s, p, %(n)s, coalesce((SELECT txid FROM top), '0'::xid8),
                   coalesce((SELECT outbox_id FROM top), 0),
                   CASE WHEN p = 0 THEN (SELECT events FROM total) ELSE 0 END
            FROM generate_series(0, %(n)s - 1) AS p
            """,
            {"c": consumer, "n": partitions},
        )
    console.print(f"{consumer}: {partitions} partition(s)")
