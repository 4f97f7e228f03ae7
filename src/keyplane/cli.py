"""The one ``keyplane`` command."""

from __future__ import annotations

import typer

from keyplane.apps import cli as holder
from keyplane.commands import admin, audit, exchange, scan, serve

app = typer.Typer(
    name="keyplane",
    help="Exchange API keys: the server, its admin tools, and the tools that hold keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(admin.app, name="admin")
app.add_typer(audit.app, name="audit")
app.command("scan")(scan.scan)
app.add_typer(holder.keys_app, name="keys")
app.add_typer(holder.portfolio_app, name="portfolio")
app.add_typer(holder.tax_app, name="tax")
app.add_typer(holder.bot_app, name="bot")
exchange.register(app)


def main() -> None:
    app()
