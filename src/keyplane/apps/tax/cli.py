"""``keyplane tax``: sync history into a local ledger, import CSV, and report realised gains."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from keyplane.apps.common import chosen_profiles, data_file, err, fail, handled, out, warn
from keyplane.apps.tax import csvimport, report, reporter
from keyplane.apps.tax.engine import TaxError, check_method
from keyplane.apps.tax.ledger import Ledger
from keyplane.apps.tax.pools import METHODS
from keyplane.apps.tax.sync import Syncer
from keyplane.client.ccxt_factory import ccxt_exchange
from keyplane.client.errors import ClientError

app = typer.Typer(help="Trades, deposits and withdrawals in a local ledger; realised gains by year.")
LedgerOpt = typer.Option(None, "--ledger", envvar="KEYPLANE_TAX_LEDGER", help="Ledger file.")


def _ledger(path: Path | None) -> Ledger:
    return Ledger(path or data_file("ledger.sqlite"))


@app.command("sync")
@handled
def sync(
    profile: list[str] = typer.Option(None, "--profile", "-p", help="Only these profiles (default: all)."),
    since: str = typer.Option("2017-07-14", help="Where a first sync starts (UTC date)."),
    symbols: str = typer.Option("", help="Comma-separated symbols (BTC/USDT,...); default: every market."),
    ledger_path: Path | None = LedgerOpt,
) -> None:
    """Pull new trades, deposits and withdrawals from every profile (incremental and idempotent).

    A profile that fails (unreachable, key revoked, ...) is reported on one line and the others
    are synced; the exit code is then 1."""
    try:
        since_ms = csvimport.parse_date(since)
    except ValueError as e:
        fail(f"--since: {e}")
    chosen = chosen_profiles(profile)
    wanted = [s.strip().upper() for s in symbols.split(",") if s.strip()] or None
    summaries: list[str] = []
    failed: list[str] = []
    with _ledger(ledger_path) as ledger:
        try:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
            ) as bar:
                for p in chosen:
                    task = bar.add_task(p.name, total=None)
                    try:
                        syncer = Syncer(
                            ledger, p.name, ccxt_exchange(p, enableRateLimit=True), since_ms=since_ms, symbols=wanted
                        )
                        _sync_one(syncer, bar, task)
                    except (ClientError, TaxError) as e:
                        failed.append(p.name)
                        bar.update(task, description=f"{p.name} failed")
                        # Through the progress bar's console: the line goes above the bars, not into them.
                        bar.console.print(f"[bold red]error:[/] {p.name}: {e}", highlight=False, soft_wrap=True)
                        continue
                    s = syncer.stats
                    summaries.append(
                        f"{p.name}: {s.trades} new trade(s), {s.deposits} deposit(s), "
                        f"{s.withdrawals} withdrawal(s) ({s.requests} requests)"
                    )
        finally:
            # After the bars are gone, so no summary line lands in the middle of one.
            for line in summaries:
                out.print(line, highlight=False, soft_wrap=True)
            counts = ledger.counts()
            out.print(
                f"ledger: {counts['trades']} trades, {counts['deposits']} deposits, "
                f"{counts['withdrawals']} withdrawals",
                highlight=False,
                soft_wrap=True,
            )
    if failed:
        raise typer.Exit(1)


def _sync_one(syncer: Syncer, bar: Progress, task: TaskID) -> None:
    name = syncer.account
    streams = syncer.plan()
    bar.update(task, total=len(streams))
    for stream in streams:
        bar.update(task, description=f"{name} {stream}")
        syncer.sync(stream)
        bar.advance(task)
    bar.update(task, description=f"{name} done")


@app.command("import")
@handled
def import_(
    file: Path = typer.Argument(..., help="CSV file (see docs/holder.md for the columns)."),
    fmt: str = typer.Option("csv", "--format", help="Only csv."),
    account: str = typer.Option("", help="Account name for these trades (default: csv:<file name>)."),
    ledger_path: Path | None = LedgerOpt,
) -> None:
    """Add trades from a CSV file (all rows or none)."""
    if fmt != "csv":
        fail(f"unknown format {fmt!r}: only csv is supported")
    trades = csvimport.read(file, account or f"csv:{file.stem}")
    with _ledger(ledger_path) as ledger:
        added = ledger.add_trades(trades)
    out.print(f"imported {added} new trade(s) of {len(trades)} row(s) from {file}")


@app.command("report")
@handled
def report_cmd(
    method: str = typer.Option("fifo", help=f"Cost-basis method: {', '.join(METHODS)}."),
    year: int | None = typer.Option(None, min=1, max=9998, help="Only disposals in this calendar year (UTC)."),
    out_file: Path = typer.Option(Path("gains.csv"), "--out", help="CSV of disposals; the summary goes beside it."),
    quote: str = typer.Option("USDT", help="Report currency."),
    long_term_days: int = typer.Option(365, help="Held longer than this is long-term."),
    ledger_path: Path | None = LedgerOpt,
) -> None:
    """Compute realised gains and write one row per disposal plus a summary per asset."""
    method = method.lower()
    check_method(method)
    ledger_path = ledger_path or data_file("ledger.sqlite")
    if not ledger_path.is_file():
        fail(f"no ledger at {ledger_path}: fill it with 'keyplane tax sync' or 'keyplane tax import' first")
    quote = quote.upper()
    with Ledger(ledger_path) as lg:  # refuse a currency nothing can be valued in, before any file is written
        lg.check_report_currency(quote)
    try:
        done = reporter.make(
            ledger_path,
            out_file,
            method=method,
            quote=quote,
            long_term_days=long_term_days,
            year=year,
        )
    except OSError as e:  # the report's files: a ledger that cannot be read is a TaxError
        fail(f"cannot write the report to {out_file}: {e.strerror or e}")
    table = Table("asset", "short gain", "long gain", "total gain", title=f"Realised gains ({method}, {done.quote})")
    for s in done.summary:
        table.add_row(s.asset, report.num(s.short_gain), report.num(s.long_gain), report.num(s.total_gain))
    out.print(table)
    for w in done.warnings[:20]:
        warn(w)
    if len(done.warnings) > 20:
        warn(f"... and {len(done.warnings) - 20} more warnings")
    out.print(f"wrote {done.rows} disposal(s) to {out_file} and the summary to {done.summary_path}")
