"""freqtrade, unchanged, trades live against the reference exchange through ccxt's ``binance`` class,
pointed at keyplane by ``keyplane.client.ccxt_config``, with its WebSocket candles on and its
stop-loss on the exchange; ``freqtrade download-data``, with and without ``--dl-trades``, fetches
every candle and every trade keyplane holds.

Live, on two markets at once: on BTC it enters, places a STOP_LOSS_LIMIT sell and exits by the
strategy's signal (cancelling the stop first); on ETH it enters, places its stop, and the stop fires
when the market falls through it, which freqtrade sees as its exit. Each step is checked in
keyplane's own tables as well as freqtrade's, and freqtrade's log has no error. freqtrade runs as a
subprocess with a hard time limit and is stopped with SIGINT.

A market maker per market (two accounts, signed orders through ccxt, bounded in count and time)
keeps a two-sided book whose mid walks, and trades against it, so that candles and trades exist and
the price moves. freqtrade acts on closed candles only, so the run waits for the first minute after
the market makers' first trades to close: up to a minute.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest
from sqlalchemy import text

from keyplane.client import ccxt_config, ccxt_exchange
from keyplane.exchange.klines import MINUTE_MS, open_of
from kptest import streams
from kptest.backends import unavailable
from kptest.exchange import D, ExchangeServer, check_invariants, exchange_server, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIVE_LIMIT_S = 115.0  # the hard limit on the whole ``freqtrade trade`` run, SIGINT included
DOWNLOAD_LIMIT_S = 60.0
STAKE = 20  # USDT per trade

# {signal_pair} is the pair that exits by the strategy's signal; the other one waits for its stop.
STRATEGY = '''
from datetime import datetime

from pandas import DataFrame

from freqtrade.persistence import Trade
from freqtrade.strategy import IStrategy

SIGNAL_EXIT_PAIR = "{signal_pair}"


class KeyplaneRoundTrip(IStrategy):
    """Enters every pair at once, once. The signal pair exits a few seconds after its stop is on
    the exchange; the other pair holds until its stop fires."""

    INTERFACE_VERSION = 3
    timeframe = "1m"
    minimal_roi = {{"0": 10}}
    stoploss = -0.05
    startup_candle_count = 0
    can_short = False

    def populate_indicators(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        return dataframe

    def populate_entry_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["enter_long"] = 1
        return dataframe

    def populate_exit_trend(self, dataframe: DataFrame, metadata: dict) -> DataFrame:
        dataframe["exit_long"] = 0
        return dataframe

    def confirm_trade_entry(self, pair, order_type, amount, rate, time_in_force, current_time, entry_tag,
                            side, **kwargs) -> bool:
        return not Trade.get_trades_proxy(pair=pair)

    def custom_exit(self, pair: str, trade: Trade, current_time: datetime, current_rate: float,
                    current_profit: float, **kwargs):
        if pair != SIGNAL_EXIT_PAIR or not trade.has_open_sl_orders:
            return None
        return "round_trip" if (current_time - trade.open_date_utc).total_seconds() >= 5 else None
'''


@dataclass
class MarketMaker:
    """Quotes a bid and an ask of ``size`` at ``spread`` around a mid that walks by at most
    ``step`` a round (new quotes first, then the old ones cancelled, so the book is never empty),
    and trades ``take`` against them from a second account. :meth:`jump` moves the mid at once
    (the old quotes cancelled first: the new ones would cross them). Stops after ``max_rounds``
    rounds or ``max_s`` seconds, or when told to."""

    url: str
    symbol: str
    maker: tuple[str, str]
    taker: tuple[str, str]
    mid: float
    spread: float
    size: float
    take: float
    max_rounds: int = 400
    max_s: float = 150.0
    rounds: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _jump_to: float | None = None

    def jump(self, mid: float) -> None:
        self._jump_to = mid

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"market-maker-{self.symbol}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=20)
            assert not self._thread.is_alive(), "the market maker did not stop"

    def _run(self) -> None:
        maker = ccxt_exchange(self.url, *self.maker, timeout=10000)
        taker = ccxt_exchange(self.url, *self.taker, timeout=10000)
        rng = random.Random(self.symbol)
        deadline = time.monotonic() + self.max_s
        quotes: list[str] = []
        try:
            maker.load_markets()
            taker.load_markets()
            while self.rounds < self.max_rounds and time.monotonic() < deadline and not self._stop.is_set():
                jump, self._jump_to = self._jump_to, None
                if jump is not None:
                    self._cancel(maker, quotes)
                    quotes, self.mid = [], jump
                # A step of at most half the half-spread: new quotes never cross the old ones.
                self.mid = round(self.mid + rng.uniform(-1, 1) * self.spread / 2, 2)
                fresh = [
                    maker.create_order(self.symbol, "limit", side, self.size, round(self.mid + sign * self.spread, 2))
                    for side, sign in (("buy", -1), ("sell", 1))
                ]
                self._cancel(maker, quotes)
                quotes = [o["id"] for o in fresh]
                taker.create_order(self.symbol, "market", "buy" if self.rounds % 2 else "sell", self.take)
                self.rounds += 1
                self._stop.wait(0.4)  # the market maker's pace, not a wait for a state
        except Exception as e:  # reported by the tests, which fail on it
            self.errors.append(f"{e.__class__.__name__}: {e}")

    def _cancel(self, maker: Any, order_ids: list[str]) -> None:
        for order_id in order_ids:
            with contextlib.suppress(ccxt.OrderNotFound):  # filled meanwhile
                maker.cancel_order(order_id, self.symbol)


@dataclass
class Market:
    symbol: str  # ccxt's, e.g. BTCFAB/USDTFAB
    market_id: str  # keyplane's, e.g. BTCFABUSDTFAB
    mm: MarketMaker


@dataclass
class Venue:
    xs: ExchangeServer
    btc: Market  # exits by the strategy's signal
    eth: Market  # exits by its stop
    bot_user: int
    bot_key: tuple[str, str]

    @property
    def markets(self) -> tuple[Market, Market]:
        return self.btc, self.eth

    def stop_market_makers(self) -> None:
        for m in self.markets:
            m.mm.stop()
        assert [m.mm.errors for m in self.markets] == [[], []]


@pytest.fixture(scope="module")
def venue(make_settings) -> Iterator[Venue]:
    if importlib.util.find_spec("freqtrade") is None:
        unavailable("freqtrade (pip install -e '.[test]')")
    with exchange_server(make_settings(), streams.market_suffix("F")) as xs:
        svc = xs.services
        funds = {xs.a("BTC"): "50", xs.a("ETH"): "500", xs.a("USDT"): "3000000"}
        maker, taker = (streams.trading_account(svc, **funds)[1] for _ in range(2))
        bot_user, bot = streams.trading_account(svc, **{xs.a("USDT"): "1000"})
        accounts = ((maker.info.api_key, maker.secret), (taker.info.api_key, taker.secret))

        def market(base: str, mid: float, spread: float, size: float, take: float) -> Market:
            symbol = xs.sym(base, "USDT")
            return Market(
                symbol, symbol.replace("/", ""), MarketMaker(xs.url, symbol, *accounts, mid, spread, size, take)
            )

        venue = Venue(
            xs, market("BTC", 30000, 20, 0.05, 0.001), market("ETH", 2000, 2, 0.5, 0.01), bot_user.id,
            (bot.info.api_key, bot.secret),
        )  # fmt: skip
        for m in venue.markets:
            m.mm.start()
        try:
            yield venue
        finally:
            for m in venue.markets:
                m.mm.stop()
            check_invariants(svc)


def _write_config(venue: Venue, tmp: Path) -> Path:
    keyplane = ccxt_config(venue.xs.url)
    config = {
        "max_open_trades": 2,
        "stake_currency": venue.xs.a("USDT"),
        "stake_amount": STAKE,
        "tradable_balance_ratio": 0.99,
        "fiat_display_currency": "",
        "timeframe": "1m",
        "dry_run": False,
        "trading_mode": "spot",
        "margin_mode": "",
        "cancel_open_orders_on_exit": False,
        "unfilledtimeout": {"entry": 10, "exit": 10, "exit_timeout_count": 0, "unit": "seconds"},
        "entry_pricing": {
            "price_side": "other",
            "use_order_book": True,
            "order_book_top": 1,
            "price_last_balance": 0.0,
            "check_depth_of_market": {"enabled": False, "bids_to_ask_delta": 1},
        },
        "exit_pricing": {"price_side": "other", "use_order_book": True, "order_book_top": 1},
        "order_types": {
            "entry": "limit",
            "exit": "limit",
            "stoploss": "limit",
            "stoploss_on_exchange": True,
            "stoploss_on_exchange_interval": 60,
        },
        "exchange": {
            "name": "binance",
            "key": venue.bot_key[0],
            "secret": venue.bot_key[1],
            "ccxt_config": keyplane,
            "ccxt_async_config": keyplane,
            "enable_ws": True,
            # Candles and trades from keyplane, not from Binance's public archive (data.binance.vision).
            "only_from_ccxt": True,
            "pair_whitelist": [m.symbol for m in venue.markets],
            "pair_blacklist": [],
        },
        # DelistFilter reads Binance's spot delist schedule at start-up and every iteration.
        "pairlists": [{"method": "StaticPairList"}, {"method": "DelistFilter"}],
        "telegram": {"enabled": False, "token": "", "chat_id": ""},
        "bot_name": "keyplane-e2e",
        "initial_state": "running",
        "force_entry_enable": False,
        "internals": {"process_throttle_secs": 1, "heartbeat_interval": 0},
        "dataformat_ohlcv": "json",
        "dataformat_trades": "json",
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def _freqtrade(*args: str | Path, log: Path) -> subprocess.Popen[bytes]:
    """``freqtrade <args>`` logging at DEBUG (``-vv``: its WebSocket module too) to ``log``, its
    console output beside it. Without pytest's PYTEST_VERSION in its environment: freqtrade leaves
    its logging unset under pytest."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_VERSION"}
    with (log.parent / f"{log.stem}.out").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "freqtrade", *map(str, args), "-vv", "--logfile", str(log)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _tail(log: Path, n: int = 60) -> str:
    parts = []
    for path in (log, log.parent / f"{log.stem}.out"):
        if path.exists():
            parts.append("\n".join(path.read_text(errors="replace").splitlines()[-n:]))
    return "\n---\n".join(parts)


def _assert_clean_log(log: Path) -> None:
    out = log.parent / f"{log.stem}.out"
    lines = log.read_text(errors="replace").splitlines() + out.read_text(errors="replace").splitlines()
    bad = [ln for ln in lines if re.search(r" - (ERROR|CRITICAL) - |Traceback|Exception", ln)]
    assert bad == [], "freqtrade logged errors:\n" + "\n".join(bad[:40])


def _bot_orders(venue: Venue, market: Market) -> list[dict[str, Any]]:
    """keyplane's record of the bot's orders on ``market``, oldest first, less the entries and
    exits freqtrade cancelled unfilled: a limit at the best price that the market maker's re-quote
    left behind is cancelled after ``unfilledtimeout`` and placed again, as on any exchange."""
    with venue.xs.services.db.read() as s:
        rows = s.connection().execute(
            text(
                "SELECT id, side, type, status, price, stop_price, orig_qty, executed_qty FROM ex_orders "
                "WHERE user_id = :u AND symbol = :s ORDER BY id"
            ),
            {"u": venue.bot_user, "s": market.market_id},
        )
        orders = [dict(r._mapping) for r in rows]
    return [o for o in orders if not (o["type"] == "LIMIT" and o["status"] == "CANCELED" and o["executed_qty"] == 0)]


def _shape(orders: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(o["side"], o["type"], o["status"]) for o in orders]


# The bot's orders on each market, (side, type, status) in id order, at each step of the run.
BOUGHT, SOLD = ("BUY", "LIMIT", "FILLED"), ("SELL", "LIMIT", "FILLED")
SIGNAL_EXIT = [BOUGHT, ("SELL", "STOP_LOSS_LIMIT", "CANCELED"), SOLD]
STOP_ARMED = [BOUGHT, ("SELL", "STOP_LOSS_LIMIT", "NEW")]
STOP_EXIT = [BOUGHT, ("SELL", "STOP_LOSS_LIMIT", "FILLED")]


def _freqtrade_trades(db_path: Path) -> dict[str, tuple[int, str | None]]:
    """freqtrade's own record of its trades, read-only: pair -> (is_open, exit_reason)."""
    if not db_path.exists():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=1)) as db:
            return {p: (o, r) for p, o, r in db.execute("SELECT pair, is_open, exit_reason FROM trades")}
    except sqlite3.OperationalError:  # not created yet, or busy: asked again at the next poll
        return {}


def test_live_trades_with_the_stop_on_the_exchange(venue: Venue, tmp_path: Path) -> None:
    btc, eth = venue.markets
    config = _write_config(venue, tmp_path)
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "keyplane_round_trip.py").write_text(STRATEGY.format(signal_pair=btc.symbol))
    (tmp_path / "user_data").mkdir()
    log, db_path = tmp_path / "trade.log", tmp_path / "trades.sqlite"
    started = time.monotonic()
    deadline = started + LIVE_LIMIT_S
    proc = _freqtrade(
        "trade",
        "--config", config,
        "--strategy", "KeyplaneRoundTrip",
        "--strategy-path", tmp_path / "strategies",
        "--userdir", tmp_path / "user_data",
        "--db-url", f"sqlite:///{db_path}",
        log=log,
    )  # fmt: skip

    def reached(btc_orders: list[Any], eth_orders: list[Any], freqtrade: dict[str, Any] | None = None) -> bool:
        if proc.poll() is not None or time.monotonic() > deadline - 10:
            return True  # the asserts below say what went wrong
        return (
            _shape(_bot_orders(venue, btc)) == btc_orders
            and _shape(_bot_orders(venue, eth)) == eth_orders
            and (freqtrade is None or _freqtrade_trades(db_path) == freqtrade)
        )

    try:
        # Both entered at the first closed candle, both stops armed; BTC then exits by signal.
        wait_for(lambda: reached(SIGNAL_EXIT, STOP_ARMED), timeout_s=LIVE_LIMIT_S)
        armed = _bot_orders(venue, eth)
        assert _shape(armed) == STOP_ARMED, f"{_bot_orders(venue, btc)}\n{armed}\n{_tail(log)}"
        # ETH falls through its stop (5 % under the entry) to where the bids are above the stop's
        # limit (1 % under the stop): the stop fires and fills.
        quote = venue.xs.services.exchange.markets[eth.market_id].quote
        eth.mm.jump(float(D(quote.plain(armed[-1]["stop_price"])) * D("0.995")))
        closed = {btc.symbol: (0, "round_trip"), eth.symbol: (0, "stoploss_on_exchange")}
        wait_for(lambda: reached(SIGNAL_EXIT, STOP_EXIT, closed), timeout_s=LIVE_LIMIT_S)
    finally:
        code = _stop(proc, deadline)
    elapsed = time.monotonic() - started
    orders = {m.symbol: _bot_orders(venue, m) for m in venue.markets}
    assert [_shape(orders[btc.symbol]), _shape(orders[eth.symbol])] == [SIGNAL_EXIT, STOP_EXIT], (
        f"after {elapsed:.0f}s: {orders}\n{_tail(log)}"
    )
    assert code == 130, _tail(log)  # freqtrade's exit status after SIGINT
    venue.stop_market_makers()

    # keyplane's record: each stop 5 % under its entry, its limit 1 % under the stop; ETH's stop
    # filled in full; no coin left on either market but dust (under one lot step).
    for m in venue.markets:
        buy, stop = orders[m.symbol][:2]
        assert D("0.94") * buy["price"] < stop["stop_price"] < D("0.96") * buy["price"]
        assert D("0.985") * stop["stop_price"] < stop["price"] < stop["stop_price"]
    assert orders[eth.symbol][1]["executed_qty"] == orders[eth.symbol][1]["orig_qty"] > 0
    balance = ccxt_exchange(venue.xs.url, *venue.bot_key).fetch_balance()
    for m, step in ((btc, "0.00001"), (eth, "0.0001")):
        coin = balance[m.symbol.split("/")[0]]
        assert D(coin["used"]) == 0 and D(coin["free"]) < D(step), (m.symbol, coin)

    # freqtrade's own record agrees: both trades closed, by the strategy's exit and by the stop.
    assert _freqtrade_trades(db_path) == closed
    _assert_clean_log(log)
    logged = log.read_text()
    assert "SIGINT received" in logged
    # keyplane's kline streams fed its candle cache (ccxt.pro watch_ohlcv, once a second); a frame
    # ccxt could not read would have ended the watch with an exception, logged at ERROR.
    for m in venue.markets:
        assert len(re.findall(rf"watch done {re.escape(m.symbol)}, 1m, data [1-9]", logged)) >= 3, m.symbol
    print(f"freqtrade live run: {elapsed:.1f}s")


def _stop(proc: subprocess.Popen[bytes], deadline: float) -> int:
    """SIGINT, then the rest of the time limit for freqtrade to shut down."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("freqtrade did not stop within its time limit after SIGINT") from None


def _keyplane_candles(venue: Venue, market: Market) -> list[list[Any]]:
    """Every 1m kline of ``market`` as keyplane's REST ``klines`` pages them, from the first."""
    out: list[list[Any]] = []
    start = 0
    while True:
        page = httpx.get(
            f"{venue.xs.url}/api/v3/klines",
            params={"symbol": market.market_id, "interval": "1m", "startTime": start, "limit": 1000},
            timeout=10,
        ).json()
        out += page
        if len(page) < 1000:
            return out
        start = page[-1][0] + MINUTE_MS


def _keyplane_trades(venue: Venue, market: Market) -> list[tuple[int, Decimal]]:
    """Every trade of ``market`` in keyplane's tape: (id, quantity)."""
    base = venue.xs.services.exchange.markets[market.market_id].base
    with venue.xs.services.db.read() as s:
        rows = s.connection().execute(
            text("SELECT id, qty FROM ex_trades WHERE symbol = :s ORDER BY id"), {"s": market.market_id}
        )
        return [(int(i), D(base.plain(int(q)))) for i, q in rows]


def test_download_data_fetches_every_candle_and_every_trade(venue: Venue, tmp_path: Path) -> None:
    for m in venue.markets:
        assert wait_for(lambda m=m: len(_keyplane_trades(venue, m)) >= 20, timeout_s=30), "no trades"
    venue.stop_market_makers()
    config = _write_config(venue, tmp_path)
    trades = {m.symbol: _keyplane_trades(venue, m) for m in venue.markets}
    # freqtrade drops the last candle, the one still open.
    now_open = open_of("1m", int(time.time() * 1000))
    candles = {m.symbol: [c for c in _keyplane_candles(venue, m) if c[0] < now_open] for m in venue.markets}

    for dl_trades in (False, True):
        userdir = tmp_path / f"user_data_{int(dl_trades)}"
        userdir.mkdir()
        log = tmp_path / f"download_{int(dl_trades)}.log"
        started = time.monotonic()
        args = ["download-data", "--config", config, "--userdir", userdir, "--timeframes", "1m", "--days", "1"]
        proc = _freqtrade(*args, *(["--dl-trades"] if dl_trades else []), log=log)
        try:
            code = proc.wait(timeout=DOWNLOAD_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"download-data took over {DOWNLOAD_LIMIT_S}s:\n{_tail(log)}") from None
        assert code == 0, _tail(log)
        _assert_clean_log(log)
        data = userdir / "data" / "binance"
        for m in venue.markets:
            name = m.symbol.replace("/", "_")
            if dl_trades:
                # freqtrade's columns: timestamp, id, type, side, price, amount, cost. ccxt reads
                # Binance's aggregate trades; here each is one trade (one maker order a price).
                got = json.loads((data / f"{name}-trades.json").read_text())
                assert len(got) == len(trades[m.symbol]), m.symbol
                assert sum(D(t[5]) for t in got) == sum(q for _, q in trades[m.symbol]), m.symbol
            else:
                # columns: open time, open, high, low, close, volume
                got = json.loads((data / f"{name}-1m.json").read_text())
                assert [c[0] for c in got] == [c[0] for c in candles[m.symbol]], m.symbol
                assert [[D(x) for x in c[1:6]] for c in got] == [[D(x) for x in c[1:6]] for c in candles[m.symbol]]
        print(f"download-data{' --dl-trades' if dl_trades else ''}: {time.monotonic() - started:.1f}s")
