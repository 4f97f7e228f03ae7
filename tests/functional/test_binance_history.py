"""Market data and order history as Binance spot answers them, over real HTTP: aggTrades and
historicalTrades paging, klines with quiet intervals, avgPrice, the rolling and trading-day tickers,
allOrders' selections, exchangeInfo's rate limits, and each parameter refusal with Binance's code;
driven by hand and through ccxt (the way freqtrade pages trade history)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.exchange.params import parse_new_order
from kptest.clients import ccxt_binance, now_ms, signed_get
from kptest.exchange import ExchangeServer, exchange_server, signed_request, wait_for

D = Decimal
TRADE_KEYS = {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
AGG_KEYS = {"a", "p", "q", "f", "l", "T", "m", "M"}
ROLLING_FULL = [
    "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "openPrice", "highPrice", "lowPrice",
    "lastPrice", "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count",
]  # fmt: skip
MINI = [
    "symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume", "openTime", "closeTime",
    "firstId", "lastId", "count",
]  # fmt: skip


@pytest.fixture
def xs(make_settings) -> Iterator[ExchangeServer]:
    """A server with a database (and so markets) of this test's own."""
    settings = make_settings(
        rate_limit_per_key="1200/minute", rate_limit_per_ip="50000/5minutes", rate_limit_public_per_ip="1000000/day"
    )
    with exchange_server(settings) as srv:
        yield srv


def _user(xs: ExchangeServer) -> int:
    uid = xs.services.accounts.create_user(f"h{secrets.token_hex(6)}@example.com", "correct horse battery staple").id
    for asset, amount in (("BTC", "100"), ("ETH", "1000"), ("USDT", "10000000")):
        xs.services.exchange.wallet.credit(uid, asset, amount)
    return uid


class Tape:
    """Two funded accounts that trade with each other in one market (each trade a resting maker
    order filled whole by a taker), placed through the exchange service the server runs on."""

    def __init__(self, xs: ExchangeServer, symbol: str) -> None:
        self.xs, self.symbol = xs, symbol
        self.maker, self.taker = _user(xs), _user(xs)

    def trade(self, price: str, qty: str, taker_side: str = "BUY") -> None:
        ex = self.xs.services.exchange
        maker_side = "SELL" if taker_side == "BUY" else "BUY"
        for uid, side in ((self.maker, maker_side), (self.taker, taker_side)):
            p = {"symbol": self.symbol, "side": side, "type": "LIMIT", "timeInForce": "GTC", "price": price}
            ex.orders.place(uid, parse_new_order({**p, "quantity": qty}, ex.markets))


def get(xs: ExchangeServer, path: str, headers: dict[str, str] | None = None, **params: Any) -> Any:
    r = httpx.get(xs.url + path, params=params, headers=headers, timeout=10)
    assert r.status_code == 200, (path, params, r.text)
    body = r.json()
    assert not (isinstance(body, dict) and "code" in body), body
    return body


def refused(xs: ExchangeServer, path: str, code: int, fragment: str, **params: Any) -> None:
    r = httpx.get(xs.url + path, params=params, timeout=10)
    assert r.status_code == 400, (path, params, r.text)
    body = r.json()
    assert body["code"] == code and fragment in body["msg"], (params, body)


def _wait_past(t_ms: int) -> None:
    """Until the clock has moved past ``t_ms`` (bounded)."""
    assert wait_for(lambda: now_ms() > t_ms, 5.0)


# -- trades --------------------------------------------------------------------------------------


def test_agg_trades_page_forward_by_id_and_by_time(xs):
    tape = Tape(xs, "BTCUSDT")
    for i in range(25):
        tape.trade(f"{20000 + i}", "0.001", "BUY" if i % 3 else "SELL")
    every = get(xs, "/api/v3/historicalTrades", symbol="BTCUSDT", limit=1000)
    assert [t["id"] for t in every] == list(range(1, 26))

    # Neither fromId nor a time: the latest, oldest first.
    latest = get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", limit=5)
    assert [a["a"] for a in latest] == [21, 22, 23, 24, 25]
    for a, t in zip(latest, every[20:], strict=True):
        assert set(a) == AGG_KEYS and a["a"] == a["f"] == a["l"] == t["id"], a
        assert (D(a["p"]), D(a["q"]), a["T"], a["m"]) == (D(t["price"]), D(t["qty"]), t["time"], t["isBuyerMaker"])
        assert a["M"] is True

    # fromId: ids from it on, ascending, `limit` of them; paging with it reaches every trade once.
    assert [a["a"] for a in get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=3, limit=4)] == [3, 4, 5, 6]
    seen, from_id = [], 0
    while True:
        page = get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=from_id, limit=7)
        if not page:
            break
        seen += [a["a"] for a in page]
        from_id = page[-1]["a"] + 1
    assert seen == list(range(1, 26))
    assert get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=26) == []

    # startTime: from that time on, oldest first; endTime alone: the last `limit` up to it.
    t10 = every[9]["time"]
    got = get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", startTime=t10, limit=3)
    assert [a["a"] for a in got] == [t["id"] for t in every if t["time"] >= t10][:3]
    got = get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", endTime=t10, limit=3)
    assert [a["a"] for a in got] == [t["id"] for t in every if t["time"] <= t10][-3:]
    t20 = every[19]["time"]
    got = get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", startTime=t10, endTime=t20, limit=1000)
    assert [a["a"] for a in got] == [t["id"] for t in every if t10 <= t["time"] <= t20]
    # No longest window (Binance dropped its hour): a day is fine.
    day = 86_400_000
    assert len(get(xs, "/api/v3/aggTrades", symbol="BTCUSDT", startTime=t10 - day, endTime=t20 + day)) == 25

    combo = "Combination of optional parameters invalid"
    refused(xs, "/api/v3/aggTrades", -1128, combo, symbol="BTCUSDT", fromId=1, startTime=t10)
    refused(xs, "/api/v3/aggTrades", -1128, "fromId", symbol="BTCUSDT", fromId=1, endTime=t10)
    refused(xs, "/api/v3/aggTrades", -1102, "limit", symbol="BTCUSDT", limit=1001)
    refused(xs, "/api/v3/aggTrades", -1100, "fromId", symbol="BTCUSDT", fromId="x")
    refused(xs, "/api/v3/aggTrades", -1121, "Invalid symbol.", symbol="NOPE")


def test_ccxt_pages_trades_as_freqtrade_does(xs):
    """freqtrade's download-data --dl-trades on Binance: fetch_trades(since) once, then fromId (the
    last id, inclusive) until the end; every trade arrives exactly once, in order."""
    tape = Tape(xs, "ETHUSDT")
    for i in range(30):
        tape.trade(f"{2000 + i % 7}", "0.01", "SELL" if i % 2 else "BUY")
    ex = ccxt_binance(xs.url)
    ex.load_markets()
    first = get(xs, "/api/v3/historicalTrades", symbol="ETHUSDT", fromId=1, limit=1)[0]
    # (ccxt sorts each page by time, so trades of the same millisecond may swap: ids are compared
    # as a set, each exactly once, as freqtrade keeps them.)
    trades = ex.fetch_trades("ETH/USDT", since=first["time"], limit=8)
    assert sorted(int(t["id"]) for t in trades) == list(range(1, 9))
    last = max(int(t["id"]) for t in trades)
    collected = [int(t["id"]) for t in trades if int(t["id"]) != last]
    while True:
        page = [int(t["id"]) for t in ex.fetch_trades("ETH/USDT", params={"fromId": last})]
        assert min(page) == last  # fromId is inclusive
        if len(page) <= 1:
            collected += page
            break
        collected += [i for i in page if i != max(page)]
        last = max(page)
    assert sorted(collected) == list(range(1, 31)) and len(collected) == 30
    assert {t["side"] for t in ex.fetch_trades("ETH/USDT", params={"fromId": 1})} == {"buy", "sell"}


def test_historical_trades_are_public(xs):
    tape = Tape(xs, "ETHBTC")
    for price in ("0.05", "0.06", "0.07", "0.08", "0.09", "0.1"):
        tape.trade(price, "0.1")
    key = xs.services.keys.create(_user(xs), scopes=("read",), step_up=StepUp.operator())
    recent = get(xs, "/api/v3/trades", symbol="ETHBTC")
    # No key, a valid key (python-binance and ccxt send their X-MBX-APIKEY), a nonsense one: the
    # header is ignored, as on Binance since historicalTrades became a NONE-security endpoint.
    for headers in ({}, {"X-MBX-APIKEY": key.info.api_key}, {"X-MBX-APIKEY": "not-a-key"}):
        assert get(xs, "/api/v3/historicalTrades", headers=headers, symbol="ETHBTC") == recent
    page = get(xs, "/api/v3/historicalTrades", symbol="ETHBTC", fromId=2, limit=3)
    assert [t["id"] for t in page] == [2, 3, 4] and all(set(t) == TRADE_KEYS for t in page)
    assert page == recent[1:4]
    assert [t["id"] for t in get(xs, "/api/v3/historicalTrades", symbol="ETHBTC", limit=2)] == [5, 6]
    # ccxt's own route to it (it insists on an apiKey for this method, and sends it).
    ex = ccxt_binance(xs.url, key.info.api_key, key.secret)
    ex.load_markets()
    got = ex.fetch_trades("ETH/BTC", params={"method": "publicGetHistoricalTrades", "fromId": 4})
    assert [int(t["id"]) for t in got] == [4, 5, 6]
    assert [D(str(t["price"])) for t in got] == [D("0.08"), D("0.09"), D("0.10")]
    refused(xs, "/api/v3/historicalTrades", -1102, "limit", symbol="ETHBTC", limit=0)
    refused(xs, "/api/v3/historicalTrades", -1102, "Mandatory parameter 'symbol'")


# -- klines --------------------------------------------------------------------------------------


def _second_boundary_after(t_ms: int) -> int:
    return t_ms - t_ms % 1000 + 1000


def test_klines_show_quiet_intervals_as_flat_candles(xs):
    tape = Tape(xs, "BTCUSDT")
    assert get(xs, "/api/v3/klines", symbol="BTCUSDT", interval="1m") == []  # never traded: no candles
    assert wait_for(lambda: now_ms() % 1000 < 400, 5.0)  # early in a second: the first two trades share it
    tape.trade("20000", "0.01")
    tape.trade("20050", "0.02", "SELL")
    first = get(xs, "/api/v3/trades", symbol="BTCUSDT")[0]["time"]
    # Let two whole seconds pass without a trade, then trade again.
    _wait_past(_second_boundary_after(first) + 1999)
    tape.trade("19990", "0.03")
    rows = get(xs, "/api/v3/klines", symbol="BTCUSDT", interval="1s", startTime=0)
    assert rows[0][0] == first - first % 1000  # from the first trade's second, none before
    assert [r[0] for r in rows] == [rows[0][0] + 1000 * i for i in range(len(rows))]  # no gap
    assert len(rows) >= 3
    t, o, h, low, c, v, close_t, q, n, vb, qb, ignore = rows[0]
    assert close_t == t + 999 and ignore == "0" and n == 2
    assert (D(o), D(h), D(low), D(c), D(v)) == (D("20000"), D("20050"), D("20000"), D("20050"), D("0.03"))
    assert (D(q), D(vb), D(qb)) == (D("200") + D("401"), D("0.01"), D("200"))
    *before, last_traded = [r for r in rows if r[8]]
    assert len(before) == 1 and D(last_traded[4]) == D("19990")
    quiet = [r for r in rows if r[0] < last_traded[0] and r[8] == 0]
    assert len(quiet) >= 2, rows  # two whole seconds passed between the trades
    for r in quiet:  # flat at the previous close, nothing traded
        assert [D(x) for x in r[1:6]] == [D("20050")] * 4 + [D(0)] and (D(r[7]), r[8], D(r[9])) == (0, 0, 0), r
    # uiKlines answers the same; UTC in any spelling is accepted, another zone is refused.
    window = {"symbol": "BTCUSDT", "interval": "1s", "startTime": rows[0][0], "endTime": last_traded[0]}
    same = get(xs, "/api/v3/klines", **window)
    assert get(xs, "/api/v3/uiKlines", **window) == same
    for tz in ("0", "+00:00", "-0", "00:00"):
        assert get(xs, "/api/v3/klines", timeZone=tz, **window) == same
    refused(xs, "/api/v3/klines", -1100, "UTC only", timeZone="8", **window)
    refused(xs, "/api/v3/klines", -1100, "UTC only", timeZone="+05:45", **window)
    refused(xs, "/api/v3/uiKlines", -1100, "Illegal characters found in parameter 'timeZone'", timeZone="UTC", **window)
    # endTime alone: the `limit` candles ending there.
    assert get(xs, "/api/v3/klines", symbol="BTCUSDT", interval="1s", endTime=last_traded[0], limit=2) == same[-2:]


def test_kline_intervals_and_refusals(xs):
    tape = Tape(xs, "ETHUSDT")
    tape.trade("2000", "0.5")
    for interval in ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d"):
        (row,) = get(xs, "/api/v3/klines", symbol="ETHUSDT", interval=interval)
        assert row[8] == 1 and D(row[5]) == D("0.5"), (interval, row)
    (week,) = get(xs, "/api/v3/klines", symbol="ETHUSDT", interval="1w")
    assert time.gmtime(week[0] / 1000).tm_wday == 0 and week[6] == week[0] + 7 * 86_400_000 - 1  # Monday
    (month,) = get(xs, "/api/v3/klines", symbol="ETHUSDT", interval="1M")
    opened, closed = time.gmtime(month[0] / 1000), time.gmtime((month[6] + 1) / 1000)
    assert (opened.tm_mday, opened.tm_hour, closed.tm_mday) == (1, 0, 1) and closed.tm_mon != opened.tm_mon
    refused(xs, "/api/v3/klines", -1120, "Invalid interval", symbol="ETHUSDT", interval="7m")
    refused(xs, "/api/v3/klines", -1120, "Invalid interval", symbol="ETHUSDT", interval="1H")  # case-sensitive
    refused(xs, "/api/v3/klines", -1102, "interval", symbol="ETHUSDT")
    refused(xs, "/api/v3/klines", -1102, "limit", symbol="ETHUSDT", interval="1m", limit=1001)
    refused(xs, "/api/v3/klines", -1100, "startTime", symbol="ETHUSDT", interval="1m", startTime="-5")
    # ccxt's fetch_ohlcv (freqtrade's candles) reads them unchanged.
    ex = ccxt_binance(xs.url)
    ex.load_markets()
    (candle,) = ex.fetch_ohlcv("ETH/USDT", "1d", since=0)
    assert candle[1:] == [2000.0, 2000.0, 2000.0, 2000.0, 0.5]


# -- average price and tickers -----------------------------------------------------------------


def test_avg_price_and_tickers(xs):
    tape = Tape(xs, "BTCUSDT")
    empty = get(xs, "/api/v3/avgPrice", symbol="BTCUSDT")
    assert empty == {"mins": 5, "price": "0.00000000", "closeTime": 0}
    tape.trade("20000", "0.01")
    tape.trade("20300", "0.03", "SELL")
    trades = get(xs, "/api/v3/trades", symbol="BTCUSDT")
    avg = get(xs, "/api/v3/avgPrice", symbol="BTCUSDT")
    # Volume-weighted over the last 5 minutes: (200 + 609) / 0.04.
    assert avg == {"mins": 5, "price": "20225.00000000", "closeTime": trades[-1]["time"]}

    day = get(xs, "/api/v3/ticker/24hr", symbol="BTCUSDT")
    assert day["closeTime"] - day["openTime"] == 86_400_000 and day["count"] == 2
    assert list(get(xs, "/api/v3/ticker/24hr", symbol="BTCUSDT", type="MINI")) == MINI

    before = now_ms()
    rolling = get(xs, "/api/v3/ticker", symbol="BTCUSDT", windowSize="5m")
    assert list(rolling) == ROLLING_FULL
    opened = rolling["openTime"]
    assert opened % 60_000 == 0 and before - 6 * 60_000 < opened <= before - 4 * 60_000
    assert rolling["closeTime"] >= before
    assert (rolling["firstId"], rolling["lastId"], rolling["count"]) == (1, 2, 2)
    assert (D(rolling["openPrice"]), D(rolling["lastPrice"]), D(rolling["highPrice"])) == (D(20000), D(20300), D(20300))
    assert D(rolling["weightedAvgPrice"]) == D("20225") and D(rolling["priceChange"]) == D("300")
    for field in ("volume", "quoteVolume", "count", "lastPrice"):  # the default 1d window agrees with 24hr
        assert get(xs, "/api/v3/ticker", symbol="BTCUSDT")[field] == day[field]
    many = get(xs, "/api/v3/ticker", symbols='["BTCUSDT","ETHUSDT"]', windowSize="2h", type="MINI")
    assert [list(d) for d in many] == [MINI, MINI] and [d["symbol"] for d in many] == ["BTCUSDT", "ETHUSDT"]
    assert many[1]["count"] == 0 and many[1]["firstId"] == -1

    today = get(xs, "/api/v3/ticker/tradingDay", symbol="BTCUSDT", timeZone="0")
    assert list(today) == ROLLING_FULL and today["count"] == 2
    assert today["openTime"] % 86_400_000 == 0 and today["closeTime"] == today["openTime"] + 86_400_000 - 1

    for size in ("60m", "24h", "8d", "0m", "1w", "1d2h", "01m", "m"):
        refused(xs, "/api/v3/ticker", -1102, "Invalid windowSize", symbol="BTCUSDT", windowSize=size)
    refused(xs, "/api/v3/ticker", -1102, "Param 'symbol' or 'symbols' must be sent")
    refused(xs, "/api/v3/ticker/tradingDay", -1102, "Param 'symbol' or 'symbols' must be sent")
    refused(xs, "/api/v3/ticker", -1102, "Invalid type", symbol="BTCUSDT", type="mini")
    refused(xs, "/api/v3/ticker/tradingDay", -1100, "UTC only", symbol="BTCUSDT", timeZone="-1:00")
    refused(xs, "/api/v3/avgPrice", -1121, "Invalid symbol.", symbol="NOPE")
    refused(xs, "/api/v3/ticker", -1121, "Invalid symbol.", symbols='["BTCUSDT","NOPE"]')


def test_exchange_info_rate_limits_are_the_enforced_ones(xs):
    info = get(xs, "/api/v3/exchangeInfo")
    assert info["rateLimits"] == [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},  # per key
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 5, "limit": 50000},  # per IP, signed
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "DAY", "intervalNum": 1, "limit": 1000000},  # per IP, public
    ]
    assert get(xs, "/api/v3/exchangeInfo", symbol="ETHBTC")["rateLimits"] == info["rateLimits"]
    (sym,) = get(xs, "/api/v3/exchangeInfo", symbol="ETHBTC")["symbols"]
    assert sym["ocoAllowed"] is False  # no OCO route


# -- allOrders -----------------------------------------------------------------------------------


def test_all_orders_selections(xs):
    uid = _user(xs)
    key = xs.services.keys.create(uid, scopes=("read", "trade"), step_up=StepUp.operator())
    api_key, secret = key.info.api_key, key.secret

    def place(price: str) -> dict[str, Any]:
        r = signed_request("POST", xs.url, "/api/v3/order", api_key, secret, {
            "symbol": "ETHBTC", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": price, "quantity": "0.1",
        })  # fmt: skip
        assert r.status_code == 200, r.text
        return r.json()

    def all_orders(**params: Any) -> list[int]:
        r = signed_get(xs.url, "/api/v3/allOrders", api_key, secret, {"symbol": "ETHBTC", **params})
        assert r.status_code == 200, (params, r.text)
        return [o["orderId"] for o in r.json()]

    ids = [place(f"0.0{10 + i}")["orderId"] for i in range(8)]
    assert all_orders() == ids
    assert all_orders(limit=3) == ids[-3:]  # the latest, oldest first
    assert all_orders(orderId=ids[2], limit=4) == ids[2:6]  # from orderId on, ascending
    assert all_orders(orderId=ids[-1] + 1) == []
    # startTime/endTime select by the last update (orderId is then ignored): cancel one later.
    docs = signed_get(xs.url, "/api/v3/allOrders", api_key, secret, {"symbol": "ETHBTC"}).json()
    _wait_past(max(o["updateTime"] for o in docs))
    r = signed_request("DELETE", xs.url, "/api/v3/order", api_key, secret, {"symbol": "ETHBTC", "orderId": ids[1]})
    assert r.status_code == 200, r.text
    cancelled = signed_get(xs.url, "/api/v3/order", api_key, secret, {"symbol": "ETHBTC", "orderId": ids[1]}).json()
    since = cancelled["updateTime"]
    assert cancelled["status"] == "CANCELED" and since > max(o["updateTime"] for o in docs)
    assert all_orders(startTime=since) == [ids[1]]
    assert all_orders(startTime=since, orderId=ids[5]) == [ids[1]]
    assert all_orders(endTime=since - 1) == [i for i in ids if i != ids[1]]
    assert all_orders(endTime=since - 1, limit=2) == ids[-2:]
    assert all_orders(startTime=0, limit=2) == ids[:1] + ids[2:3]  # oldest updates first
    first = docs[0]["updateTime"]
    assert all_orders(startTime=first, endTime=first + 86_400_000) == [i for i in ids if i != ids[1]] + [ids[1]]
    # ccxt's fetch_orders(since) is a startTime query.
    ex = ccxt_binance(xs.url, api_key, secret)
    ex.load_markets()
    # (ccxt keeps the orders created since ``since``: every one of them was updated since too.)
    assert sorted(int(o["id"]) for o in ex.fetch_orders("ETH/BTC", since=first)) == ids
    assert [int(o["id"]) for o in ex.fetch_orders("ETH/BTC", limit=2)] == ids[-2:]

    for params, code, fragment in [
        (
            {"startTime": first, "endTime": first + 86_400_001},
            -1127,
            "More than 24 hours between startTime and endTime",
        ),
        ({"limit": 1001}, -1102, "limit"),
        ({"limit": 0}, -1102, "limit"),
        ({"orderId": "abc"}, -1100, "orderId"),
        ({"startTime": "1.5"}, -1100, "startTime"),
    ]:
        r = signed_get(xs.url, "/api/v3/allOrders", api_key, secret, {"symbol": "ETHBTC", **params})
        assert r.status_code == 400 and r.json()["code"] == code and fragment in r.json()["msg"], (params, r.text)
    # myTrades answers a window over 24 hours as allOrders does (Binance's -1127)
    r = signed_get(xs.url, "/api/v3/myTrades", api_key, secret,
                   {"symbol": "ETHBTC", "startTime": first, "endTime": first + 86_400_001})  # fmt: skip
    assert r.status_code == 400 and r.json()["code"] == -1127, r.text
