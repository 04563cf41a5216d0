"""The `educonnect` command line: one typer app, one module per command group.

    educonnect db upgrade|downgrade|current    migrations (cli/db.py)
    educonnect seed                            demo marketplace (cli/seed.py)
    educonnect index build                     search documents in bulk (cli/index.py)
    educonnect indexer run|status|reset        the outbox relay (cli/indexer.py)
    educonnect reindex                         zero-downtime rebuild (cli/reindex.py)
    educonnect serve                           the HTTP API (cli/serve.py)
    educonnect stats                           row counts (cli/stats.py)
    educonnect payments reconcile              Stripe vs local payments (payments/cli.py)
    educonnect payments sweep                  finish refunds, events, intent cancels left pending
    educonnect notifications relay|retry-dead  notification relays, dead letters (notifications/cli.py)
    educonnect credits expire|allocate         credit expiry, monthly grants (credits/cli.py)
    educonnect demo journey                    the student journey via the API (cli/demo.py)

Bad input exits with code 2 and a message (typer/click's usage-error convention).
"""

from __future__ import annotations

import typer

from cli.db import db_app
from cli.demo import demo_app
from cli.index import index_app
from cli.indexer import indexer_app
from cli.reindex import reindex
from cli.seed import seed
from cli.serve import serve
from cli.stats import stats
from credits.cli import credits_app
from notifications.cli import notifications_app
from payments.cli import payments_app

app = typer.Typer(no_args_is_help=True, help="EduConnect: tutoring and coaching marketplace.")
app.add_typer(db_app, name="db")
app.command("seed")(seed)
app.add_typer(index_app, name="index")
app.add_typer(indexer_app, name="indexer")
app.command("reindex")(reindex)
app.command("serve")(serve)
app.command("stats")(stats)
app.add_typer(payments_app, name="payments")
app.add_typer(notifications_app, name="notifications")
app.add_typer(credits_app, name="credits")
app.add_typer(demo_app, name="demo")


if __name__ == "__main__":
    app()
