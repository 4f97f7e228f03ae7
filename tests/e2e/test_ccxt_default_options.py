"""ccxt's binance class as a user builds it by hand: every URL of ``urls['api']`` pointed at the
keyplane server and NO options, so ccxt runs its defaults (``fetchCurrencies``, ``fetchMargins``,
spot + linear + inverse markets). It loads exactly keyplane's spot markets, with currencies that
carry keyplane's networks, fees and limits, and the wallet and fee calls work; the same through
keyplane's own factories, which still send nothing anywhere but the server."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.client import ccxt_async_exchange, ccxt_exchange, ccxt_pro_exchange
from keyplane.exchange.wallet import deposit_address
from kptest.exchange import ExchangeServer, exchange_server, unique_markets_file

pytestmark = pytest.mark.e2e

# What ccxt 4.5.90's load_markets asks, in order, with its default options and a key.
DEFAULT_LOAD = [
    "/sapi/v1/capital/config/getall",
    "/sapi/v1/margin/allPairs",
    "/api/v3/exchangeInfo",
    "/sapi/v1/margin/allPairs",
    "/sapi/v1/margin/isolated/allPairs",
    "/fapi/v1/exchangeInfo",
    "/dapi/v1/exchangeInfo",
]


@pytest.fixture(scope="module")
def xs(make_settings, tmp_path_factory) -> Iterator[ExchangeServer]:
    """The default markets under names of this module's own, BTCUSDT with fees of its own."""
    suffix = "F" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
    path = unique_markets_file(tmp_path_factory.mktemp("markets") / "markets.json", suffix)
    doc = json.loads(path.read_text())
    doc["markets"][f"BTC{suffix}USDT{suffix}"].update(maker_fee="0.0002", taker_fee="0.00075")
    path.write_text(json.dumps(doc))
    with exchange_server(make_settings(markets_file=path)) as srv:
        srv.suffix = suffix
        yield srv


class Recording:
    """Mixed into a ccxt class: every request's URL, to show none of them left the server."""

    seen: list[str]

    def fetch(self, url: str, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(url)
        return super().fetch(url, *args, **kwargs)  # type: ignore[misc]


class RecordingBinance(Recording, ccxt.binance):
    pass


class AsyncRecording:
    seen: list[str]

    async def fetch(self, url: str, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(url)
        return await super().fetch(url, *args, **kwargs)  # type: ignore[misc]


class AsyncRecordingBinance(AsyncRecording, ccxt.async_support.binance):
    pass


def by_hand(base: str) -> dict[str, str]:
    """What a user copies: every URL of ccxt's ``urls['api']`` with Binance's host swapped for the
    server's, the path kept (``https://fapi.binance.com/fapi/v1`` -> ``<base>/fapi/v1``)."""
    return {name: base + urlsplit(url).path for name, url in ccxt.binance().urls["api"].items()}


def _user_and_key(xs: ExchangeServer, scopes: tuple[str, ...] = ("read",), **restrictions: Any):
    svc = xs.services
    user = svc.accounts.create_user(f"d{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    svc.exchange.wallet.credit(user.id, xs.a("USDT"), "1234.5")
    issued = svc.keys.create(
        user.id,
        scopes=scopes,
        restrictions=svc.keys.build_restrictions(**restrictions),
        key_type="hmac",
        step_up=StepUp.operator(),
    )
    return user, issued


def _plain(cls: type, xs: ExchangeServer, issued) -> Any:
    ex = cls({"apiKey": issued.info.api_key, "secret": issued.secret, "urls": {"api": by_hand(xs.url)}})
    ex.seen = []
    return ex


def _keyplane_symbols(xs: ExchangeServer) -> set[str]:
    return {f"{m.base.name}/{m.quote.name}" for m in xs.services.exchange.markets.values()}


def _paths(ex: Any) -> list[str]:
    assert {urlsplit(u).hostname for u in ex.seen} <= {"127.0.0.1"}, ex.seen
    return [urlsplit(u).path for u in ex.seen]


def _check_markets(xs: ExchangeServer, markets: dict[str, Any]) -> None:
    assert set(markets) == _keyplane_symbols(xs)
    for m in markets.values():
        assert m["type"] == "spot" and m["spot"] is True and m["margin"] is False
        assert m["marginModes"] == {"cross": False, "isolated": False}
        assert m["linear"] is None and m["contract"] is False


def _check_currencies(xs: ExchangeServer, currencies: dict[str, Any]) -> None:
    assets = xs.services.exchange.assets
    assert set(currencies) - {"BNFCR"} == set(assets)  # BNFCR: a static entry of ccxt's binance class
    usdt = currencies[xs.a("USDT")]
    assert set(usdt["networks"]) == {"ERC20"}  # keyplane's network ETH, in ccxt's unified code
    net = usdt["networks"]["ERC20"]
    assert (net["id"], net["deposit"], net["withdraw"], net["fee"]) == ("ETH", True, True, 1)
    assert net["limits"]["withdraw"]["min"] == 10 and net["precision"] == 1e-08
    assert usdt["fee"] == 1 and usdt["precision"] == 1e-08 and usdt["limits"]["withdraw"]["min"] == 10
    assert usdt["active"] is True and usdt["deposit"] is True and usdt["withdraw"] is True
    btc = currencies[xs.a("BTC")]["networks"]["BTC"]
    assert (btc["fee"], btc["limits"]["withdraw"]["min"]) == (0.0002, 0.001)
    assert Decimal(currencies[xs.a("USDT")]["info"]["free"]) == Decimal("1234.5")


def test_load_markets_with_default_options_sees_exactly_the_spot_markets(xs):
    _, issued = _user_and_key(xs)
    ex = _plain(RecordingBinance, xs, issued)
    assert ex.options["fetchCurrencies"] is True and ex.options["fetchMargins"] is True  # ccxt's defaults
    markets = ex.load_markets()
    assert _paths(ex) == DEFAULT_LOAD
    _check_markets(xs, markets)
    _check_currencies(xs, ex.currencies)
    m = markets[xs.sym("BTC", "USDT")]
    assert m["precision"]["price"] == 0.01 and m["limits"]["cost"]["min"] == 5


def test_wallet_and_fee_calls_with_default_options(xs):
    user, issued = _user_and_key(xs)
    ex = _plain(RecordingBinance, xs, issued)
    ex.load_markets()
    del ex.seen[:]

    _check_currencies(xs, ex.fetch_currencies())
    fees = ex.fetch_trading_fees()
    assert set(fees) == _keyplane_symbols(xs)
    assert (fees[xs.sym("BTC", "USDT")]["maker"], fees[xs.sym("BTC", "USDT")]["taker"]) == (0.0002, 0.00075)
    assert (fees[xs.sym("ETH", "BTC")]["maker"], fees[xs.sym("ETH", "BTC")]["taker"]) == (0.001, 0.001)
    one = ex.fetch_trading_fee(xs.sym("BTC", "USDT"))
    assert (one["symbol"], one["maker"], one["taker"]) == (xs.sym("BTC", "USDT"), 0.0002, 0.00075)

    wallet = xs.services.exchange.wallet
    usdt = ex.fetch_deposit_address(xs.a("USDT"))
    assert usdt["address"] == deposit_address(user.id, wallet.asset(xs.a("USDT")))
    assert usdt["address"].startswith("0x") and usdt["currency"] == xs.a("USDT") and usdt["tag"] is None
    assert ex.fetch_deposit_address(xs.a("USDT"), {"network": "ERC20"})["address"] == usdt["address"]
    assert ex.fetch_deposit_address(xs.a("ETH"))["address"] == usdt["address"]  # one address per network
    assert ex.fetch_deposit_address(xs.a("BTC"))["address"].startswith("bc1q")
    with pytest.raises(ccxt.BadRequest, match="Network 'TRX' is not available"):
        ex.fetch_deposit_address(xs.a("USDT"), {"network": "TRC20"})

    assert ex.fetch_status()["status"] == "ok"
    dw = ex.fetch_deposit_withdraw_fees()
    assert dw[xs.a("USDT")]["withdraw"]["fee"] == 1
    assert dw[xs.a("USDT")]["networks"]["ERC20"]["withdraw"]["fee"] == 1
    assert {urlsplit(u).hostname for u in ex.seen} == {"127.0.0.1"}


def test_a_second_account_sees_its_own_balances_and_address(xs):
    _, first = _user_and_key(xs)
    other_user, second = _user_and_key(xs)
    a, b = _plain(RecordingBinance, xs, first), _plain(RecordingBinance, xs, second)
    xs.services.exchange.wallet.credit(other_user.id, xs.a("USDT"), "1")
    assert Decimal(a.fetch_currencies()[xs.a("USDT")]["info"]["free"]) == Decimal("1234.5")
    assert Decimal(b.fetch_currencies()[xs.a("USDT")]["info"]["free"]) == Decimal("1235.5")
    assert a.fetch_deposit_address(xs.a("BTC"))["address"] != b.fetch_deposit_address(xs.a("BTC"))["address"]


def test_a_trade_only_key_is_refused_the_currencies_clearly(xs):
    """getall is a read call: with ccxt's defaults, load_markets on a key without ``read`` stops
    there, naming the scope (keyplane's factory leaves fetchCurrencies off for such keys)."""
    _, issued = _user_and_key(xs, scopes=("trade",))
    with pytest.raises(ccxt.PermissionDenied, match="needs the 'read' scope"):
        _plain(RecordingBinance, xs, issued).load_markets()
    ex = ccxt_exchange(xs.url, issued.info.api_key, issued.secret)
    assert set(ex.load_markets()) == _keyplane_symbols(xs)


def test_async_with_default_options(xs):
    user, issued = _user_and_key(xs)

    async def go() -> None:
        ex = _plain(AsyncRecordingBinance, xs, issued)
        try:
            markets = await ex.load_markets()
            assert _paths(ex) == DEFAULT_LOAD
            _check_markets(xs, markets)
            _check_currencies(xs, ex.currencies)
            fees = await ex.fetch_trading_fees()
            assert fees[xs.sym("BTC", "USDT")]["taker"] == 0.00075
            assert (await ex.fetch_trading_fee(xs.sym("ETH", "USDT")))["maker"] == 0.001
            address = await ex.fetch_deposit_address(xs.a("ETH"))
            assert address["address"] == deposit_address(user.id, xs.services.exchange.wallet.asset(xs.a("ETH")))
            assert (await ex.fetch_status())["status"] == "ok"
        finally:
            await ex.close()

    asyncio.run(go())


def _only_the_server(ex: Any) -> None:
    for part in ("api", "test", "demo"):
        for where, url in _leaves(ex.urls.get(part) or {}):
            assert urlsplit(url).hostname in ("127.0.0.1", "keyplane.invalid"), (part, where, url)


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{name}.")
        elif isinstance(value, str):
            yield prefix + name, value


def test_factory_sync_keeps_load_markets_to_exchange_info_and_serves_every_default(xs):
    user, issued = _user_and_key(xs)
    ex = ccxt_exchange(xs.url, issued.info.api_key, issued.secret)
    _only_the_server(ex)
    assert ex.urls["api"]["fapiPublic"] == xs.url + "/fapi/v1" and ex.urls["api"]["dapiPublic"] == xs.url + "/dapi/v1"
    seen: list[str] = []
    fetch = ex.fetch
    ex.fetch = lambda url, *a, **kw: (seen.append(url), fetch(url, *a, **kw))[1]
    _check_markets(xs, ex.load_markets())
    assert [urlsplit(u).path for u in seen] == ["/api/v3/exchangeInfo", "/api/v3/time"]
    assert ex.fetch_currencies() == {}  # fetchCurrencies is off in the factory
    assert ex.fetch_trading_fee(xs.sym("BTC", "USDT"))["maker"] == 0.0002
    assert ex.fetch_deposit_address(xs.a("BTC"))["address"] == deposit_address(
        user.id, xs.services.exchange.wallet.asset(xs.a("BTC"))
    )
    assert ex.fetch_status()["status"] == "ok"
    # ccxt's own defaults, asked for explicitly, also stay on the server and list the same markets.
    full = ccxt_exchange(
        xs.url, issued.info.api_key, issued.secret, fetchCurrencies=True, fetchMargins=True,
        fetchMarkets={"types": ["spot", "linear", "inverse", "option"]},
    )  # fmt: skip
    _check_markets(xs, full.load_markets())
    _check_currencies(xs, full.currencies)


def test_factory_async_and_pro(xs):
    user, issued = _user_and_key(xs)
    expected = deposit_address(user.id, xs.services.exchange.wallet.asset(xs.a("USDT")))

    async def go(make: Any) -> None:
        ex = make(xs.url, issued.info.api_key, issued.secret, fetchCurrencies=True, fetchMargins=True,
                  fetchMarkets={"types": ["spot", "linear", "inverse"]})  # fmt: skip
        try:
            _only_the_server(ex)
            _check_markets(xs, await ex.load_markets())
            _check_currencies(xs, await ex.fetch_currencies())
            assert (await ex.fetch_trading_fees())[xs.sym("BTC", "USDT")]["maker"] == 0.0002
            assert (await ex.fetch_trading_fee(xs.sym("ETH", "BTC")))["taker"] == 0.001
            assert (await ex.fetch_deposit_address(xs.a("USDT"), {"network": "ERC20"}))["address"] == expected
            assert (await ex.fetch_status())["status"] == "ok"
        finally:
            await ex.close()

    asyncio.run(go(ccxt_async_exchange))
    asyncio.run(go(ccxt_pro_exchange))
