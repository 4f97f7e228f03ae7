"""ccxt's binance class, unstubbed, drives the reference exchange through every unified call the
exchange promises, with HMAC and Ed25519 keys; balances, fees and trades are checked to the unit."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from decimal import Decimal

import ccxt
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.client import ccxt_exchange
from kptest.clients import ed25519_keypair
from kptest.exchange import D, ExchangeServer, check_invariants, clear_books, exchange_server, wait_for

pytestmark = pytest.mark.e2e

ETH_ADDR = "0x" + "ab" * 20


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    suffix = "E" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
    with exchange_server(make_settings(withdraw_step_s=0.1), suffix) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs: ExchangeServer) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


def _user(xs: ExchangeServer, **credit: str):
    user = xs.services.accounts.create_user(f"x{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    for asset, amount in credit.items():
        xs.services.exchange.wallet.credit(user.id, xs.a(asset), amount)
    return user


def _key(xs: ExchangeServer, user, scopes=("read", "trade"), key_type="hmac", **restrictions):
    svc = xs.services
    public_pem = None
    private_pem = None
    if key_type == "ed25519":
        private_pem, public_pem = ed25519_keypair()
    issued = svc.keys.create(
        user.id,
        scopes=scopes,
        restrictions=svc.keys.build_restrictions(**restrictions),
        key_type=key_type,
        public_key=public_pem,
        step_up=StepUp.operator(),
    )
    return ccxt_exchange(xs.url, issued.info.api_key, private_pem or issued.secret, timeout=10000)


def _bal(ex, asset: str) -> tuple[Decimal, Decimal]:
    b = ex.fetch_balance()
    return D(b[asset]["free"]), D(b[asset]["used"])


@pytest.mark.parametrize(("taker_type", "base"), [("hmac", "BTC"), ("ed25519", "ETH")])
def test_two_accounts_trade_to_the_last_unit(xs, taker_type, base):
    sym = xs.sym(base, "USDT")
    alice = _user(xs, USDT="10000")
    bob = _user(xs, **{base: "1"})
    a = _key(xs, alice, key_type=taker_type)
    b = _key(xs, bob, key_type="ed25519" if taker_type == "hmac" else "hmac")

    markets = a.load_markets()
    assert {xs.sym("BTC", "USDT"), xs.sym("ETH", "USDT"), xs.sym("ETH", "BTC")} <= set(markets)
    m = markets[sym]
    assert m["precision"]["price"] == 0.01 and m["precision"]["amount"] == (0.00001 if base == "BTC" else 0.0001)
    assert m["limits"]["cost"]["min"] == 5
    assert abs(a.fetch_time() - a.milliseconds()) < 5000
    volume_before = D(a.fetch_ticker(sym)["baseVolume"])
    since = a.milliseconds() // 60000 * 60000  # ccxt drops candles that open before since

    ask = b.create_order(sym, "limit", "sell", 0.5, 20000)
    assert ask["status"] == "open" and ask["clientOrderId"].startswith("x-")
    assert [o["id"] for o in b.fetch_open_orders(sym)] == [ask["id"]]
    assert _bal(b, xs.a(base)) == (D("0.5"), D("0.5"))

    # Limit buy that takes 0.2 at the maker's price; the taker pays 0.1% in BTC, the maker in USDT.
    buy = a.create_order(sym, "limit", "buy", 0.2, 20000)
    assert buy["status"] == "closed" and D(buy["filled"]) == D("0.2") and D(buy["cost"]) == D("4000")
    assert D(buy["fees"][0]["cost"]) == D("0.0002") and buy["fees"][0]["currency"] == xs.a(base)
    # Market buy by quantity, then by cost (quoteOrderQty).
    mkt = a.create_order(sym, "market", "buy", 0.1)
    assert mkt["status"] == "closed" and D(mkt["cost"]) == D("2000")
    by_cost = a.create_order(sym, "market", "buy", None, None, {"cost": 1000})
    assert D(by_cost["filled"]) == D("0.05") and D(by_cost["cost"]) == D("1000")
    # Bob bids, Alice market-sells into the bid.
    bid = b.create_order(sym, "limit", "buy", 0.1, 19000)
    sell = a.create_order(sym, "market", "sell", 0.1)
    assert sell["status"] == "closed" and D(sell["cost"]) == D("1900")
    assert b.fetch_order(bid["id"], sym)["status"] == "closed"

    # Alice: 10000 - 4000 - 2000 - 1000 + 1900*(1-0.001) USDT; 0.35 BTC less 0.1% fees, minus 0.1 sold.
    assert _bal(a, xs.a("USDT")) == (D("4898.1"), D("0"))
    assert _bal(a, xs.a(base)) == (D("0.34965") - D("0.1"), D("0"))
    # Bob: sold 0.35 for 7000 less 7 fee; bought 0.1 at 19000 for 1900, less 0.0001 BTC fee.
    assert _bal(b, xs.a("USDT")) == (D("6993") - D("1900"), D("0"))
    assert _bal(b, xs.a(base)) == (D("0.5") + D("0.0999"), D("0.15"))

    # A resting order, fetched and cancelled.
    rest = a.create_order(sym, "limit", "sell", 0.01, 25000)
    assert a.fetch_order(rest["id"], sym)["status"] == "open"
    cancelled = a.cancel_order(rest["id"], sym)
    assert cancelled["status"] == "canceled"
    assert a.fetch_open_orders(sym) == []

    trades = a.fetch_my_trades(sym)
    assert [(t["side"], t["takerOrMaker"], D(t["amount"]), D(t["price"])) for t in trades] == [
        ("buy", "taker", D("0.2"), D("20000")),
        ("buy", "taker", D("0.1"), D("20000")),
        ("buy", "taker", D("0.05"), D("20000")),
        ("sell", "taker", D("0.1"), D("19000")),
    ]
    assert D(trades[-1]["fee"]["cost"]) == D("1.9") and trades[-1]["fee"]["currency"] == xs.a("USDT")
    maker_trades = b.fetch_my_trades(sym)
    assert [t["takerOrMaker"] for t in maker_trades] == ["maker"] * 4
    assert sum(D(t["fee"]["cost"]) for t in maker_trades if t["fee"]["currency"] == xs.a("USDT")) == D("7")

    book = a.fetch_order_book(sym)
    assert book["asks"] == [[20000.0, 0.15]] and book["bids"] == []
    ticker = a.fetch_ticker(sym)
    assert ticker["last"] == 19000 and ticker["high"] == 20000 and ticker["low"] == 19000
    assert D(ticker["baseVolume"]) - volume_before == D("0.45") and ticker["ask"] == 20000
    tickers = a.fetch_tickers()
    assert {xs.sym("BTC", "USDT"), xs.sym("ETH", "USDT"), xs.sym("ETH", "BTC")} <= set(tickers)
    candles = a.fetch_ohlcv(sym, "1m", since)
    assert sum(D(str(c[5])) for c in candles) == D("0.45")
    assert max(c[2] for c in candles) == 20000 and min(c[3] for c in candles) == 19000
    public = a.fetch_trades(sym)
    assert [D(str(t["amount"])) for t in public[-4:]] == [D("0.2"), D("0.1"), D("0.05"), D("0.1")]
    check_invariants(xs.services)


def test_deposits_withdrawals_and_history(xs):
    alice = _user(xs, USDT="500")
    a = _key(xs, alice, scopes=("read", "withdraw"), ips=["127.0.0.1/32", "::1"])
    deposits = a.fetch_deposits(xs.a("USDT"))
    assert [(d["amount"], d["status"], d["type"]) for d in deposits] == [(500.0, "ok", "deposit")]
    assert deposits[0]["txid"]
    result = a.withdraw(xs.a("USDT"), 100, ETH_ADDR)
    assert result["id"]
    assert _bal(a, xs.a("USDT")) == (D("399"), D("0"))  # 100 + 1 USDT network fee
    assert wait_for(lambda: a.fetch_withdrawals(xs.a("USDT"))[0]["status"] == "ok", 10)
    w = a.fetch_withdrawals(xs.a("USDT"))[0]
    assert w["id"] == result["id"] and w["amount"] == 100 and w["fee"]["cost"] == 1
    assert w["address"] == ETH_ADDR and w["txid"].startswith("0x")
    check_invariants(xs.services)


def test_scopes_bite_with_precise_messages(xs):
    alice = _user(xs, USDT="1000", BTC="1")
    read_only = _key(xs, alice, scopes=("read",))
    with pytest.raises(ccxt.PermissionDenied, match="needs the 'trade' scope"):
        read_only.create_order(xs.sym("BTC", "USDT"), "limit", "buy", 0.001, 20000)
    trader = _key(xs, alice, scopes=("read", "trade"))
    with pytest.raises(ccxt.PermissionDenied, match="needs the 'withdraw' scope"):
        trader.withdraw(xs.a("USDT"), 20, ETH_ADDR)
    eth_only = _key(xs, alice, scopes=("read", "trade"), symbols=[xs.a("ETH") + xs.a("USDT")])
    with pytest.raises(ccxt.PermissionDenied, match=f"may trade only {xs.a('ETH')}{xs.a('USDT')}"):
        eth_only.create_order(xs.sym("BTC", "USDT"), "limit", "buy", 0.001, 20000)
    capped = _key(xs, alice, scopes=("read", "trade"), max_notional="100")
    with pytest.raises(
        ccxt.PermissionDenied,
        match=f"maximum notional of 100 {xs.a('USDT')}: this order's notional is 200 {xs.a('USDT')}",
    ):
        capped.create_order(xs.sym("BTC", "USDT"), "limit", "buy", 0.01, 20000)
    ok = capped.create_order(xs.sym("BTC", "USDT"), "limit", "buy", 0.004, 20000)
    assert ok["status"] == "open"
    daily = _key(xs, alice, scopes=("read", "withdraw"), ips=["127.0.0.1/32", "::1"], daily_withdraw_cap="150")
    daily.withdraw(xs.a("USDT"), 100, ETH_ADDR)
    with pytest.raises(ccxt.PermissionDenied, match=f"daily cap of 150 {xs.a('USDT')}"):
        daily.withdraw(xs.a("USDT"), 60, ETH_ADDR)
    check_invariants(xs.services)


def test_errors_map_to_ccxt_exceptions(xs):
    alice = _user(xs, USDT="100")
    a = _key(xs, alice)
    a.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        a.create_order(xs.sym("BTC", "USDT"), "limit", "buy", 0.01, 20000)
    with pytest.raises(ccxt.OrderNotFound):
        a.fetch_order("999999999", xs.sym("BTC", "USDT"))
    with pytest.raises(ccxt.OrderNotFound):
        a.cancel_order("999999999", xs.sym("BTC", "USDT"))
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):
        a.private_post_order({"symbol": xs.a("BTC") + xs.a("USDT"), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                              "quantity": "0.001", "price": "20000.005"})  # fmt: skip
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        a.private_post_order({"symbol": xs.a("BTC") + xs.a("USDT"), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                              "quantity": "0.000015", "price": "20000"})  # fmt: skip
    with pytest.raises(ccxt.BadSymbol):
        a.private_post_order({"symbol": "DOGEUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    with pytest.raises(ccxt.BadRequest, match=f"Invalid address: '0xnothex' is not a valid {xs.a('USDT')}"):
        _key(xs, alice, scopes=("read", "withdraw"), ips=["127.0.0.1/32", "::1"]).withdraw(xs.a("USDT"), 20, "0xnothex")
