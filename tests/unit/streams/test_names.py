"""Stream names: every kind Binance defines parses to its Stream; anything else is refused with a
message that says what is wrong."""

from __future__ import annotations

import pytest

from keyplane.streams.names import BadStream, Stream, parse

SYMBOLS = {"BTCUSDT", "ETHBTC"}


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("btcusdt@trade", Stream("btcusdt@trade", "trade", "BTCUSDT")),
        ("ethbtc@aggTrade", Stream("ethbtc@aggTrade", "aggTrade", "ETHBTC")),
        ("btcusdt@kline_1m", Stream("btcusdt@kline_1m", "kline", "BTCUSDT", interval="1m")),
        ("btcusdt@kline_1d", Stream("btcusdt@kline_1d", "kline", "BTCUSDT", interval="1d")),
        ("btcusdt@depth5", Stream("btcusdt@depth5", "depth", "BTCUSDT", levels=5, every_s=1.0)),
        ("btcusdt@depth20@100ms", Stream("btcusdt@depth20@100ms", "depth", "BTCUSDT", levels=20, every_s=0.1)),
        ("btcusdt@depth10@1000ms", Stream("btcusdt@depth10@1000ms", "depth", "BTCUSDT", levels=10, every_s=1.0)),
        ("btcusdt@depth", Stream("btcusdt@depth", "diffDepth", "BTCUSDT", every_s=1.0)),
        ("btcusdt@depth@100ms", Stream("btcusdt@depth@100ms", "diffDepth", "BTCUSDT", every_s=0.1)),
        ("btcusdt@ticker", Stream("btcusdt@ticker", "ticker", "BTCUSDT")),
        ("btcusdt@miniTicker", Stream("btcusdt@miniTicker", "miniTicker", "BTCUSDT")),
        ("btcusdt@bookTicker", Stream("btcusdt@bookTicker", "bookTicker", "BTCUSDT")),
        ("!ticker@arr", Stream("!ticker@arr", "ticker", None)),
        ("!miniTicker@arr", Stream("!miniTicker@arr", "miniTicker", None)),
    ],
)
def test_every_binance_stream_parses(name, want):
    assert parse(name, SYMBOLS) == want


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "invalid stream name"),
        (None, "invalid stream name"),
        (42, "invalid stream name"),
        ("x" * 65, "invalid stream name"),
        ("btcusdt", "expected <symbol>@<stream>"),
        ("@trade", "expected <symbol>@<stream>"),
        ("btcusdt@", "expected <symbol>@<stream>"),
        ("BTCUSDT@trade", "lower case"),
        ("dogeusdt@trade", "no market 'DOGEUSDT'"),
        ("btcusdt@trades", "unknown stream 'trades'"),
        ("btcusdt@trade@100ms", "unknown stream"),
        ("btcusdt@kline_2m", "kline intervals are"),
        ("btcusdt@kline_", "kline intervals are"),
        ("btcusdt@depth7", "unknown stream"),
        ("btcusdt@depth@250ms", "@100ms or @1000ms"),
        ("btcusdt@depth5@10ms", "@100ms or @1000ms"),
        ("!bookTicker@arr", "no market"),
        ("btcusdt@ticker@arr", "unknown stream"),
    ],
)
def test_anything_else_is_refused_saying_why(name, says):
    with pytest.raises(BadStream) as e:
        parse(name, SYMBOLS)
    assert says in str(e.value)
