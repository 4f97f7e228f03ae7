"""``keyplane bot grid``: a grid bot on a trade-only key, or on paper with ``--dry-run``."""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import typer

from keyplane.apps.bot.grid import GridConfig, GridState
from keyplane.apps.bot.runner import EXIT_REFUSED, ON_STOP, Refused, Runner, cancel_orders, preflight, save_state
from keyplane.apps.bot.venues import CcxtVenue, PaperVenue
from keyplane.apps.common import data_file, fail, handled, out, profile_store, setup_logging, warn
from keyplane.client import redact
from keyplane.client.ccxt_errors import translate
from keyplane.client.ccxt_factory import ccxt_exchange
from keyplane.client.profile import Profile

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
        raise translate(e, exchange) from None
    market = exchange.markets_by_id.get(symbol.upper())
    if not market:
        fail(f"unknown symbol {symbol!r}")
    return str(market[0]["symbol"] if isinstance(market, list) else market["symbol"])


def _account(profile: Profile) -> str:
    server = profile.url if profile.is_keyplane else ""
    return f"{profile.name}@{profile.exchange} {server}".rstrip()


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
    on_stop: str = typer.Option(
        "cancel",
        help="On a clean stop (signal, --duration): 'cancel' the grid's orders, or 'leave' them on the book "
        "for the next run to resume. `keyplane bot cancel` cancels a left grid later.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Place a grid of limit orders and keep it: each filled level is replaced on the other side.

    The grid is identified by its parameters and its account (profile, exchange, server): a
    restart with the same ones resumes it. A clean stop cancels its orders unless --on-stop leave."""
    setup_logging(verbose)
    on_stop = on_stop.lower()
    if on_stop not in ON_STOP:
        fail(f"--on-stop must be one of: {', '.join(ON_STOP)}")
    config = GridConfig(
        symbol, _dec("--lower", lower), _dec("--upper", upper), levels, _dec("--quote-per-level", quote_per_level)
    )
    if dry_run:
        prof = profile_store().get(profile) if profile else None
        # Public market data only: the key is never handed to ccxt in dry-run.
        url = prof.url if prof is not None and prof.is_keyplane else base_url
        exchange = ccxt_exchange(url)
        where = f"dry-run {url}"
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
        where = _account(prof)
    ccxt_symbol = _symbol(exchange, symbol)
    config = replace(config, symbol=ccxt_symbol, account=where)
    if dry_run:
        venue: CcxtVenue = PaperVenue(exchange, ccxt_symbol)
    else:
        venue = CcxtVenue(exchange, ccxt_symbol)
        try:
            for w in preflight(venue.restrictions()):
                warn(w)
        except Refused as e:
            fail(str(e), EXIT_REFUSED)
    suffix = "-dry" if dry_run else ""
    if state is None and not dry_run:
        legacy = data_file(f"bots/{config.legacy_grid_id}{suffix}.json")
        if legacy.exists():
            fail(
                f"{legacy} holds this grid as an earlier keyplane saved it, without its account: if it is "
                f"this account's grid, resume it with --state {legacy} (or cancel its orders with "
                f"`keyplane bot cancel --state {legacy} --profile {profile}`); if not, move the file away"
            )
    runner = Runner(
        config,
        venue,
        state or data_file(f"bots/{config.grid_id}{suffix}.json"),
        dry_run=dry_run,
        interval_s=interval,
        on_stop=on_stop,
        profile=None if prof is None else prof.name,
    )

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


@app.command("cancel")
@handled
def cancel(
    state: Path = typer.Option(..., help="The grid's state file (~/.keyplane/bots/<grid id>.json)."),
    profile: str | None = typer.Option(None, help="The profile it ran on (default: the one saved with it)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Cancel every order a grid left on the book (after --on-stop leave, or a stop on a lost key)."""
    setup_logging(verbose)
    try:
        doc = json.loads(state.read_text())
        grid = GridState.from_json(doc["state"])
    except OSError as e:
        fail(f"cannot read {state}: {e.strerror or e}")
    except (ValueError, KeyError, TypeError):
        fail(f"{state} is not a grid bot's state file")
    if not grid.open_levels():
        out.print(f"grid {grid.grid_id}: no open orders in {state}")
        return
    if grid.dry_run:
        venue: CcxtVenue = _Paper(doc.get("paper_orders") or {})
    else:
        name = profile or doc.get("profile")
        if not name:
            fail(f"{state} does not say which profile the grid ran on: pass --profile")
        if profile and doc.get("profile") and profile != doc["profile"]:
            warn(f"the grid ran on profile {doc['profile']!r}, not {profile!r}: its orders are not on this account")
        prof = profile_store().get(str(name))
        filt = redact.install()
        filt.add_secret(prof.signing_secret)
        venue = CcxtVenue(ccxt_exchange(prof), grid.symbol)

    canceled = cancel_orders(grid, venue, lambda: save_state(state, doc, grid, venue))
    out.print(f"grid {grid.grid_id}: canceled {canceled} open order(s) on {grid.symbol}; state in {state}")


class _Paper(PaperVenue):
    """A dry run's saved paper orders, canceled without touching any exchange."""

    def __init__(self, orders: dict[str, dict[str, str]]) -> None:
        self.orders = orders
