"""``keyplane bot grid``: a grid bot on a trade-only key, or on paper with ``--dry-run``."""

from __future__ import annotations

import logging
import signal
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import typer

from keyplane.apps.bot.grid import GridConfig
from keyplane.apps.bot.runner import EXIT_REFUSED, Refused, Runner, preflight
from keyplane.apps.bot.venues import CcxtVenue, PaperVenue
from keyplane.apps.common import data_file, fail, handled, out, profile_store, setup_logging, warn
from keyplane.client import redact
from keyplane.client.ccxt_factory import ccxt_exchange

app = typer.Typer(help="Trading bots that run on a trade-only key.", no_args_is_help=True)
log = logging.getLogger("keyplane.bot")


def _dec(name: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{name}: {text!r} is not a number")
    if not value.is_finite():
        fail(f"{name}: must be a finite number")
    return value


def _symbol(exchange: Any, symbol: str) -> str:
    """BTCUSDT or BTC/USDT -> the ccxt symbol."""
    if "/" in symbol:
        return symbol.upper()
    try:
        exchange.load_markets()
    except Exception as e:
        from keyplane.client.ccxt_errors import translate

        raise translate(e, exchange) from None
    market = exchange.markets_by_id.get(symbol.upper())
    if not market:
        fail(f"unknown symbol {symbol!r}")
    return str(market[0]["symbol"] if isinstance(market, list) else market["symbol"])


@app.command("grid")
@handled
def grid(
    symbol: str = typer.Option(..., help="Market, e.g. BTCUSDT or BTC/USDT."),
    lower: str = typer.Option(..., help="Lowest grid price."),
    upper: str = typer.Option(..., help="Highest grid price."),
    levels: int = typer.Option(..., help="Number of price levels (3-200)."),
    quote_per_level: str = typer.Option(..., help="Quote currency per order, e.g. 25 (USDT)."),
    profile: str | None = typer.Option(None, help="Keystore profile with a trade-only key."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Simulate fills against the live book; no key needed."),
    base_url: str = typer.Option("http://127.0.0.1:8000", help="Exchange for --dry-run without a profile."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds (default: run until stopped)."),
    interval: float = typer.Option(2.0, help="Seconds between polls."),
    state: Path | None = typer.Option(None, help="State file (default: ~/.keyplane/bots/<grid id>.json)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Place a grid of limit orders and keep it: each filled level is replaced on the other side."""
    setup_logging(verbose)
    config = GridConfig(
        symbol, _dec("--lower", lower), _dec("--upper", upper), levels, _dec("--quote-per-level", quote_per_level)
    )
    if dry_run:
        prof = profile_store().get(profile) if profile else None
        # Public market data only: the key is never handed to ccxt in dry-run.
        url = prof.url if prof is not None and prof.is_keyplane else base_url
        exchange = ccxt_exchange(url)
    else:
        if not profile:
            fail("--profile is required (or use --dry-run)")
        prof = profile_store().get(profile)
        filt = redact.install()
        filt.add_secret(prof.signing_secret)
        filt.add_secret(prof.api_key.reveal() if prof.api_key else None)
        if prof.exchange not in ("keyplane", "binance"):
            fail(f"the grid bot checks key permissions through apiRestrictions, which {prof.exchange} lacks")
        exchange = ccxt_exchange(prof)
    ccxt_symbol = _symbol(exchange, symbol)
    config = GridConfig(ccxt_symbol, config.lower, config.upper, config.levels, config.quote_per_level)
    if dry_run:
        venue: CcxtVenue | PaperVenue = PaperVenue(exchange, ccxt_symbol)
    else:
        venue = CcxtVenue(exchange, ccxt_symbol)
        try:
            for w in preflight(venue.restrictions()):
                warn(w)
        except Refused as e:
            fail(str(e), EXIT_REFUSED)
    default_name = f"{config.grid_id}{'-dry' if dry_run else ''}.json"
    runner = Runner(config, venue, state or data_file(f"bots/{default_name}"), dry_run=dry_run, interval_s=interval)

    def stop(signum: int, _frame: Any) -> None:
        log.warning("signal %d: stopping after this step", signum)
        runner.stop_requested = True

    def nap(seconds: float) -> None:
        end = time.monotonic() + seconds
        while not runner.stop_requested and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    runner.sleep = nap
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    mode = "dry run" if dry_run else "live"
    out.print(f"grid {config.grid_id} on {ccxt_symbol} ({mode}): {levels} levels {lower}..{upper}")
    code = runner.run(duration_s=duration)
    out.print(f"grid {config.grid_id}: {runner.fills} fill(s); state in {runner.state_path}")
    if code:
        raise typer.Exit(code)
