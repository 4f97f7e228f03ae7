"""Klines, tickers and the average price, on a real database with the exchange's clock in the
test's hands: where each interval opens (weeks on Monday, calendar months), which candles a request
selects, quiet intervals as flat candles, and one rule for a candle (``candle()`` of the streams
equals the REST ``klines`` row)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keyplane.exchange.klines import DAY_MS, KLINE_INTERVALS, MINUTE_MS, close_of, open_of, select_opens, shift
from keyplane.exchange.marketdata import Window
from keyplane.exchange.markets import Market, load_config, to_units
from keyplane.exchange.params import parse_new_order
from keyplane.exchange.service import ExchangeService
from keyplane.services import Services, build_services
from kptest.backends import db_scope
from kptest.exchange import unique_markets_file


def ms(text: str) -> int:
    """Epoch ms of an ISO time in UTC ("2024-02-29T12:00:00.000")."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("interval", "at", "opens", "closes"),
    [
        ("1s", "2024-02-29T12:34:56.789", "2024-02-29T12:34:56.000", "2024-02-29T12:34:56.999"),
        ("1m", "2024-02-29T12:34:56.789", "2024-02-29T12:34:00", "2024-02-29T12:34:59.999"),
        ("4h", "2024-02-29T12:34:56", "2024-02-29T12:00:00", "2024-02-29T15:59:59.999"),
        ("1d", "2024-02-29T00:00:00", "2024-02-29T00:00:00", "2024-02-29T23:59:59.999"),
        # 3d: multiples of three days since the epoch (19782 days to 2024-02-29: 19782 % 3 == 0).
        ("3d", "2024-03-02T23:59:59.999", "2024-02-29T00:00:00", "2024-03-02T23:59:59.999"),
        ("1w", "2024-02-29T12:00:00", "2024-02-26T00:00:00", "2024-03-03T23:59:59.999"),  # Thu -> Mon..Sun
        ("1w", "2024-02-26T00:00:00", "2024-02-26T00:00:00", "2024-03-03T23:59:59.999"),  # Monday itself
        ("1w", "1970-01-03T00:00:00", "1969-12-29T00:00:00", "1970-01-04T23:59:59.999"),  # before the first Monday
        ("1M", "2024-02-15T08:00:00", "2024-02-01T00:00:00", "2024-02-29T23:59:59.999"),  # a leap February
        ("1M", "2023-02-28T23:59:59.999", "2023-02-01T00:00:00", "2023-02-28T23:59:59.999"),
        ("1M", "2023-12-31T23:59:59.999", "2023-12-01T00:00:00", "2023-12-31T23:59:59.999"),
        ("1M", "2024-01-01T00:00:00", "2024-01-01T00:00:00", "2024-01-31T23:59:59.999"),
    ],
)
def test_where_intervals_open_and_close(interval, at, opens, closes):
    assert interval in KLINE_INTERVALS
    t0 = open_of(interval, ms(at))
    assert t0 == ms(opens)
    assert close_of(interval, t0) == ms(closes)
    assert open_of(interval, close_of(interval, t0)) == t0
    assert shift(interval, shift(interval, t0, 1), -1) == t0


def test_months_step_across_years():
    jan = ms("2024-01-01T00:00:00")
    assert shift("1M", jan, -1) == ms("2023-12-01T00:00:00")
    assert shift("1M", jan, 13) == ms("2025-02-01T00:00:00")
    assert shift("1M", jan, -25) == ms("2021-12-01T00:00:00")


NOW = ms("2024-02-29T12:34:56.789")
FIRST = ms("2024-02-29T12:00:30")  # the market's first trade


@pytest.mark.parametrize(
    ("start", "end", "limit", "expected"),
    [
        # Neither: the most recent, up to the one open now, none before the first trade's candle.
        (None, None, 3, ["12:32", "12:33", "12:34"]),
        (None, None, 1000, [f"12:{m:02d}" for m in range(35)]),
        # startTime is the earliest open time: mid-candle it starts at the next candle.
        ("12:10:00", None, 3, ["12:10", "12:11", "12:12"]),
        ("12:10:00.001", None, 2, ["12:11", "12:12"]),
        ("2024-02-28T00:00:00", None, 2, ["12:00", "12:01"]),  # before the first trade: from its candle
        ("12:33:00", None, 10, ["12:33", "12:34"]),  # never past the candle open now
        ("12:35:00", None, 10, []),  # in the future
        # endTime is the latest open time: the last `limit` candles opening at or before it.
        (None, "12:20:59.999", 2, ["12:19", "12:20"]),
        (None, "12:20:00", 2, ["12:19", "12:20"]),
        (None, "12:01:00", 5, ["12:00", "12:01"]),
        (None, "2024-02-29T11:59:59.999", 5, []),  # before the first trade
        (None, "2024-03-01T00:00:00", 1, ["12:34"]),  # in the future: up to now
        # Both: forward from startTime, not past endTime.
        ("12:10:00", "12:12:30", 10, ["12:10", "12:11", "12:12"]),
        ("12:10:00", "12:30:00", 2, ["12:10", "12:11"]),
        ("12:12:00", "12:10:00", 10, []),
    ],
)
def test_which_candles_a_request_selects(start, end, limit, expected):
    def at(text: str | None) -> int | None:
        if text is None:
            return None
        return ms(text if "T" in text else f"2024-02-29T{text}")

    got = select_opens("1m", first_ts=FIRST, now_ms=NOW, start_ms=at(start), end_ms=at(end), limit=limit)
    assert got == [ms(f"2024-02-29T{hm}:00") for hm in expected]


def test_months_are_selected_by_the_calendar():
    first, now = ms("2023-11-20T10:00:00"), ms("2024-03-05T00:00:00")
    got = select_opens("1M", first_ts=first, now_ms=now, start_ms=0, end_ms=None, limit=10)
    assert got == [ms(d) for d in ("2023-11-01", "2023-12-01", "2024-01-01", "2024-02-01", "2024-03-01")]
    got = select_opens("1M", first_ts=first, now_ms=now, start_ms=None, end_ms=ms("2024-01-31T23:59:59"), limit=2)
    assert got == [ms("2023-12-01"), ms("2024-01-01")]


def test_ticker_windows():
    now = ms("2022-01-04T09:17:47.099")
    # Binance's own example: a 1d rolling window at 09:17:47.099 opens at 09:17:00 the day before.
    assert Window(DAY_MS, on_minute=True).bounds(now) == (ms("2022-01-03T09:17:00"), now)
    assert Window().bounds(now) == (now - DAY_MS, now)  # ticker/24hr: exactly 24 hours
    assert Window(trading_day=True).bounds(now) == (ms("2022-01-04T00:00:00"), ms("2022-01-04T23:59:59.999"))


# -- on a real database ----------------------------------------------------------------------------


@pytest.fixture(scope=db_scope("module"))
def svc(make_settings) -> Iterator[Services]:
    s = build_services(make_settings())
    yield s
    s.close()


@dataclass
class Clock:
    ms: int

    def __call__(self) -> float:
        return self.ms / 1000


@dataclass
class Tape:
    """An exchange on markets of its own whose clock the test sets, and two funded accounts."""

    ex: ExchangeService
    clock: Clock
    market: Market
    maker: int
    taker: int

    def units(self, price: str) -> int:
        return to_units(price, "price", self.market.quote)

    def trade(self, at: str, price: str, qty: str, taker_side: str = "BUY") -> None:
        """One trade at ``at`` (the exchange's clock is set there): a resting maker order, and a
        taker that fills it whole."""
        self.clock.ms = ms(at)
        maker_side = "SELL" if taker_side == "BUY" else "BUY"
        for uid, side in ((self.maker, maker_side), (self.taker, taker_side)):
            p = {"symbol": self.market.symbol, "side": side, "type": "LIMIT", "timeInForce": "GTC"}
            self.ex.orders.place(uid, parse_new_order({**p, "price": price, "quantity": qty}, self.ex.markets))


@pytest.fixture
def tape(svc: Services, tmp_path: Path) -> Tape:
    suffix = "K" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(3))
    assets, markets = load_config(unique_markets_file(tmp_path / "markets.json", suffix))
    clock = Clock(0)
    ex = ExchangeService(svc.db, assets, markets, clock=clock)
    users = []
    for _ in range(2):
        uid = svc.accounts.create_user(f"k{secrets.token_hex(6)}@example.com", "correct horse battery staple").id
        ex.wallet.credit(uid, "BTC" + suffix, "10")
        ex.wallet.credit(uid, "USDT" + suffix, "1000000")
        users.append(uid)
    return Tape(ex, clock, markets[f"BTC{suffix}USDT{suffix}"], *users)


def test_quiet_intervals_are_flat_candles_from_the_first_trade(tape):
    data, m = tape.ex.data, tape.market
    tape.clock.ms = ms("2024-02-29T12:00:00")
    assert data.klines(m, "1m", start_ms=0) == []  # a market that never traded has no candles
    tape.trade("2024-02-29T12:00:10", "20000", "0.01")
    tape.trade("2024-02-29T12:00:50", "20100", "0.02", taker_side="SELL")
    tape.trade("2024-02-29T12:03:05", "19900", "0.03")
    tape.clock.ms = ms("2024-02-29T12:04:30")
    rows = data.klines(m, "1m", start_ms=0)
    assert [c.open_ms for c in rows] == [ms(f"2024-02-29T12:0{i}:00") for i in range(5)]
    first, quiet1, quiet2, traded, now = rows
    u = tape.units
    assert (first.open, first.high, first.low, first.close) == (u("20000"), u("20100"), u("20000"), u("20100"))
    assert first.count == 2 and first.volume == 3_000_000 and first.taker_buy_volume == 1_000_000
    assert first.quote_volume == tape.units("200") + tape.units("402")
    assert first.taker_buy_quote == tape.units("200")
    assert first.close_ms == ms("2024-02-29T12:00:59.999")
    for quiet in (quiet1, quiet2):  # flat at the previous close, nothing traded
        assert (quiet.open, quiet.high, quiet.low, quiet.close) == (first.close,) * 4
        assert (quiet.volume, quiet.quote_volume, quiet.count, quiet.first_id, quiet.last_id) == (0, 0, 0, -1, -1)
    assert traded.open == traded.close == tape.units("19900") and traded.count == 1
    assert now.count == 0 and now.close == traded.close  # the candle open now, quiet so far
    # One rule for a candle: what the kline streams read is what REST answers.
    for c in rows:
        assert data.candle(m, "1m", c.open_ms) == c
    # A window that starts on a quiet candle still knows the price before it.
    assert data.klines(m, "1m", start_ms=ms("2024-02-29T12:01:00"), limit=1) == [quiet1]
    assert data.klines(m, "1m", end_ms=ms("2024-02-29T12:02:00"), limit=2) == [quiet1, quiet2]
    assert data.klines(m, "1m", limit=2) == [traded, now]
    # The larger intervals agree with the minutes.
    (hour,) = data.klines(m, "1h")
    assert (hour.open, hour.high, hour.low, hour.close) == (first.open, first.high, traded.low, traded.close)
    assert hour.count == 3


def test_weeks_and_months(tape):
    data, m = tape.ex.data, tape.market
    tape.trade("2024-01-31T23:59:59", "100", "1")
    tape.trade("2024-02-01T00:00:00", "110", "1")
    tape.trade("2024-02-14T12:00:00", "90", "2", taker_side="SELL")
    tape.trade("2024-02-29T23:00:00", "105", "1")
    tape.clock.ms = ms("2024-03-12T00:00:00")
    jan, feb, mar = data.klines(m, "1M", start_ms=0)
    assert (jan.open_ms, jan.close_ms, jan.count) == (ms("2024-01-01"), ms("2024-01-31T23:59:59.999"), 1)
    assert (feb.open_ms, feb.close_ms) == (ms("2024-02-01"), ms("2024-02-29T23:59:59.999"))
    assert (feb.open, feb.high, feb.low, feb.close) == tuple(map(tape.units, ("110", "110", "90", "105")))
    assert feb.count == 3 and feb.volume == 4 * 10**8 and feb.taker_buy_volume == 2 * 10**8
    assert feb.first_id == jan.last_id + 1 and feb.last_id == feb.first_id + 2
    assert mar.count == 0 and mar.open == mar.close == feb.close
    assert data.candle(m, "1M", feb.open_ms) == feb
    weeks = data.klines(m, "1w", start_ms=0)
    assert [dt.datetime.fromtimestamp(w.open_ms / 1000, dt.UTC).weekday() for w in weeks] == [0] * len(weeks)
    assert [w.open_ms for w in weeks][:2] == [ms("2024-01-29"), ms("2024-02-05")]  # Monday of Jan 31, then on
    assert weeks[0].count == 2 and weeks[0].close == tape.units("110")
    assert weeks[-1].open_ms == ms("2024-03-11") and sum(w.count for w in weeks) == 4


def test_tickers_and_the_average_price(tape):
    data, m = tape.ex.data, tape.market
    assert data.avg_price(m) == (0, 0)  # never traded
    tape.trade("2024-02-29T11:50:00", "100", "1")
    tape.trade("2024-02-29T11:57:00", "120", "1")
    tape.trade("2024-02-29T11:59:00", "90", "3", taker_side="SELL")
    tape.clock.ms = ms("2024-02-29T12:00:30")
    # The last 5 minutes: 1 at 120 and 3 at 90 weigh to (120 + 270) / 4 = 97.5.
    assert data.avg_price(m) == (tape.units("97.5"), ms("2024-02-29T11:59:00"))
    day = data.ticker(m)
    u = tape.units
    assert (day.open, day.last, day.count, day.open_ms) == (u("100"), u("90"), 3, ms("2024-02-28T12:00:30"))
    five = data.ticker(m, Window(5 * MINUTE_MS, on_minute=True))
    assert five.open_ms == ms("2024-02-29T11:55:00") and five.close_ms == ms("2024-02-29T12:00:30")
    assert (five.open, five.high, five.low, five.count) == (tape.units("120"), tape.units("120"), tape.units("90"), 2)
    today = data.ticker(m, Window(trading_day=True))
    assert (today.open_ms, today.close_ms, today.count) == (ms("2024-02-29"), ms("2024-02-29T23:59:59.999"), 3)
    tape.clock.ms = ms("2024-02-29T12:30:00")
    # No trade in the last 5 minutes: the last price, and the last trade's time.
    assert data.avg_price(m) == (tape.units("90"), ms("2024-02-29T11:59:00"))
    quiet = data.ticker(m, Window(MINUTE_MS, on_minute=True))
    assert (quiet.count, quiet.first_id, quiet.last_id, quiet.open, quiet.last) == (0, -1, -1, u("90"), u("90"))
