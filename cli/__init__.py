"""The `educonnect` command (typer): one module per command group, assembled in
`cli.main`."""
