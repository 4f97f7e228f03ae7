"""The one ``keyplane`` command."""

from __future__ import annotations

import typer

from keyplane.commands import admin, serve

app = typer.Typer(
    name="keyplane",
    help="Exchange API keys: the server, its admin tools, and the tools that hold keys.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.add_typer(admin.app, name="admin")


def main() -> None:
    app()
