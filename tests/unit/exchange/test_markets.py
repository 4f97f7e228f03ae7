"""Market configuration and exact unit conversion."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from keyplane.exchange.errors import IllegalCharacters, TooPrecise
from keyplane.exchange.markets import DEFAULT_CONFIG, MarketConfigError, load_config, plain, to_units


def test_default_markets():
    assets, markets = load_config(None)
    assert set(markets) == {"BTCUSDT", "ETHUSDT", "ETHBTC"}
    btc = markets["BTCUSDT"]
    assert (btc.tick, btc.step, btc.min_notional) == (1_000_000, 1_000, 500_000_000)
    assert btc.notional(to_units("0.5", "q", btc.base), to_units("20000.01", "p", btc.quote)) == to_units(
        "10000.005", "n", btc.quote
    )
    assert assets["USDT"].withdraw_fee == 100_000_000


@pytest.mark.parametrize(
    ("text", "error"),
    [("-1", IllegalCharacters), ("1e5", IllegalCharacters), ("", IllegalCharacters), (" ", IllegalCharacters),
     ("0x10", IllegalCharacters), ("1.000000001", TooPrecise), ("NaN", IllegalCharacters)],
)  # fmt: skip
def test_bad_amounts(text, error):
    assets, _ = load_config(None)
    with pytest.raises(error):
        to_units(text, "amount", assets["BTC"])


def test_amounts_are_exact():
    assets, _ = load_config(None)
    assert to_units("0.00000001", "a", assets["BTC"]) == 1
    assert to_units("123456789.12345678", "a", assets["BTC"]) == 12345678912345678
    assert assets["BTC"].fmt(1) == "0.00000001"
    assert plain(Decimal("1E+2")) == "100" and plain(Decimal("0.50")) == "0.5"


def test_markets_file_json_and_toml(tmp_path):
    doc = {"markets": {"SOLUSDT": {"base": "ETH", "quote": "USDT", "tick_size": "0.001", "step_size": "0.01",
                                   "min_notional": "1", "maker_fee": "0", "taker_fee": "0.002"}}}  # fmt: skip
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    assets, markets = load_config(path)
    assert list(markets) == ["SOLUSDT"] and markets["SOLUSDT"].taker_fee == Decimal("0.002")
    assert set(assets) == set(DEFAULT_CONFIG["assets"])
    toml = tmp_path / "m.toml"
    toml.write_text('[markets.ETHUSDT]\nbase = "ETH"\nquote = "USDT"\ntick_size = "0.1"\nstep_size = "0.001"\n')
    _, markets = load_config(toml)
    assert markets["ETHUSDT"].tick == 10_000_000


@pytest.mark.parametrize(
    ("entry", "message"),
    [({"base": "XRP", "quote": "USDT", "tick_size": "1", "step_size": "1"}, "configured assets"),
     ({"base": "ETH", "quote": "USDT", "tick_size": "0.00000001", "step_size": "0.00000001"}, "whole number"),
     ({"base": "ETH", "quote": "USDT", "tick_size": "0", "step_size": "1"}, "must be positive"),
     ({"base": "ETH", "quote": "USDT", "tick_size": "1", "step_size": "1", "taker_fee": "1.5"}, "fractions"),
     ({"base": "ETH", "quote": "USDT", "tick_size": "abc", "step_size": "1"}, "must be a decimal")],
)  # fmt: skip
def test_bad_markets_file(tmp_path, entry, message):
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"markets": {"XUSDT": entry}}))
    with pytest.raises(MarketConfigError, match=message):
        load_config(path)
