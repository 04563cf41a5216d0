"""`python -m cli …`: the `educonnect` command without its console script."""

from cli.main import app

app()
