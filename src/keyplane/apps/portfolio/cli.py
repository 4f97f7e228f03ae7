"""``keyplane portfolio``: balances across every profile, a chart, and a local web page."""

from __future__ import annotations

from contextlib import closing, suppress
from pathlib import Path

import typer
from rich.table import Table

from keyplane.apps.common import chosen_profiles, data_file, err, fail, handled, out, warn
from keyplane.apps.portfolio import chart
from keyplane.apps.portfolio.tracker import Snapshot, SnapshotStore, snapshot
from keyplane.client.ccxt_factory import ccxt_exchange

app = typer.Typer(help="Balances across every profile, valued in one currency.", invoke_without_command=True)

EXIT_PROFILE_FAILED = 1
QuoteOpt = typer.Option("USDT", "--quote", help="Currency to value everything in.")
ENV_HINT = " or KEYPLANE_PROFILE_<NAME>_API_KEY"  # a tracker may run unattended, on profiles from the environment
ProfilesOpt = typer.Option(None, "--profile", "-p", help="Only these profiles (repeatable; default: all).")


def _db() -> SnapshotStore:
    return SnapshotStore(data_file("portfolio.sqlite"))


def show(snap: Snapshot) -> None:
    alloc = snap.allocation()
    assets = Table("asset", "amount", f"value ({snap.quote})", "allocation", title="By asset")
    for asset, (amount, value) in snap.by_asset().items():
        assets.add_row(asset, f"{amount:f}", f"{value:.2f}", f"{alloc.get(asset, 0)}%")
    accounts = Table("account", f"value ({snap.quote})", title="By account")
    for name, value in snap.by_profile().items():
        accounts.add_row(name, f"{value:.2f}")
    out.print(assets)
    out.print(accounts)
    out.print(f"[bold]Total: {snap.total:.2f} {snap.quote}[/]")
    for w in snap.warnings:
        warn(w)


@app.callback()
@handled
def portfolio(ctx: typer.Context, quote: str = QuoteOpt, profile: list[str] = ProfilesOpt) -> None:
    """Take a snapshot of every profile now, store it, and show it.

    A profile that cannot be read is named on one line and the others are shown; that snapshot is
    not stored (its total would show as a fall in the history) and the exit code is 1."""
    if ctx.invoked_subcommand is not None:
        return
    profiles = chosen_profiles(profile, hint=ENV_HINT)
    snap = snapshot(profiles, ccxt_exchange, quote.upper())
    if not snap.failures:
        with closing(_db()) as db:
            db.save(snap)
    if len(snap.failures) < len(profiles):
        show(snap)
    for f in snap.failures:
        err.print(f"[bold red]error:[/] {f}", highlight=False, soft_wrap=True)
    if snap.failures:
        if len(snap.failures) < len(profiles):
            warn(
                "this snapshot leaves out the profiles that failed, so it was not stored in the history; "
                "fix or remove them, or choose the others with --profile"
            )
        raise typer.Exit(EXIT_PROFILE_FAILED)


@app.command("chart")
@handled
def chart_cmd(out_file: Path = typer.Option(..., "--out", help="FILE.png or FILE.svg"), quote: str = QuoteOpt) -> None:
    """Draw value over time and the current allocation from the stored snapshots."""
    if out_file.suffix.lower() not in (".png", ".svg"):
        fail("--out must end in .png or .svg")
    with closing(_db()) as db:
        history, latest = db.history(quote), db.latest(quote)
    if not history:
        fail("no snapshots yet: run `keyplane portfolio` first")
    chart.write(out_file, history, latest)
    out.print(f"wrote {out_file} ({len(history)} snapshot(s))")


@app.command("serve")
@handled
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (keep it on loopback)."),
    port: int = typer.Option(8765, help="Port."),
    quote: str = QuoteOpt,
    profile: list[str] = ProfilesOpt,
) -> None:
    """Show the portfolio on a local web page; its Refresh button takes a new snapshot."""
    from keyplane.apps.portfolio.web import make_server

    profiles = chosen_profiles(profile, hint=ENV_HINT)  # resolve now, so a passphrase prompt happens before serving
    db = _db()
    server = make_server(db, quote.upper(), lambda: snapshot(profiles, ccxt_exchange, quote.upper()), host, port)
    out.print(f"portfolio on http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)")
    with closing(db), server, suppress(KeyboardInterrupt):
        server.serve_forever()
