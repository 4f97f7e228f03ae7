"""Bad input over real HTTP gets the Binance code and message ccxt maps, never a 500; success bodies
never carry a top-level "code"; a failure in the middle of matching leaves nothing half-applied."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from keyplane.accounts.stepup import StepUp
from kptest.backends import db_scope
from kptest.exchange import ExchangeServer, check_invariants, clear_books, exchange_server, signed_request

ETH_ADDR = "0x" + "cd" * 20


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(withdraw_step_s=0.1)) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


def _account(xs, scopes=("read", "trade"), **restrictions):
    svc = xs.services
    user = svc.accounts.create_user(f"e{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    svc.exchange.wallet.credit(user.id, "USDT", "1000")
    svc.exchange.wallet.credit(user.id, "BTC", "1")
    issued = svc.keys.create(
        user.id, scopes=scopes, restrictions=svc.keys.build_restrictions(**restrictions), step_up=StepUp.operator()
    )
    return user, issued.info.api_key, issued.secret


def _call(xs, key, secret, method, path, **params):
    return signed_request(method, xs.url, path, key, secret, params)


LIMIT = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC"}

ORDER_ERRORS = [
    ("unknown symbol", {**LIMIT, "symbol": "DOGEUSDT", "price": "1", "quantity": "1"}, -1121, "Invalid symbol."),
    ("price off tick", {**LIMIT, "price": "20000.001", "quantity": "0.001"}, -1013,
     "Filter failure: PRICE_FILTER (price 20000.001 is not a multiple of the tick size 0.01)"),
    ("price zero", {**LIMIT, "price": "0", "quantity": "0.001"}, -1013, "PRICE_FILTER (price 0 is below the minimum"),
    ("price too precise", {**LIMIT, "price": "20000.000000001", "quantity": "0.001"}, -1111, "Precision is over"),
    ("quantity off step", {**LIMIT, "price": "20000", "quantity": "0.000015"}, -1013, "LOT_SIZE"),
    ("below min notional", {**LIMIT, "price": "100", "quantity": "0.001"}, -1013, "Filter failure: NOTIONAL"),
    ("insufficient balance", {**LIMIT, "price": "20000", "quantity": "1"}, -2010,
     "Account has insufficient balance for requested action."),
    ("negative quantity", {**LIMIT, "price": "20000", "quantity": "-1"}, -1100, "Illegal characters"),
    ("non-numeric price", {**LIMIT, "price": "abc", "quantity": "0.001"}, -1100, "Illegal characters"),
    ("too many decimals", {**LIMIT, "price": "20000", "quantity": "0.000000001"}, -1111, "Precision is over"),
    ("missing price", {**LIMIT, "quantity": "0.001"}, -1102, "Mandatory parameter 'price'"),
    ("bad side", {**LIMIT, "side": "HOLD", "price": "20000", "quantity": "0.001"}, -1102, "Invalid side"),
    ("bad type", {**LIMIT, "type": "STOP", "price": "20000", "quantity": "0.001"}, -1102, "Invalid orderType"),
    ("client id too long", {**LIMIT, "price": "20000", "quantity": "0.001", "newClientOrderId": "x" * 37}, -1102,
     "newClientOrderId"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "params", "code", "msg"), ORDER_ERRORS, ids=[c[0] for c in ORDER_ERRORS])
def test_order_errors(xs, case, params, code, msg):
    _, key, secret = _account(xs)
    r = _call(xs, key, secret, "POST", "/api/v3/order", **params)
    assert r.status_code in (400, 403), r.text
    body = r.json()
    assert body["code"] == code and msg in body["msg"], body


def test_order_lifecycle_errors(xs):
    _, key, secret = _account(xs)
    r = _call(xs, key, secret, "GET", "/api/v3/order", symbol="BTCUSDT", orderId=987654321)
    assert r.status_code == 400 and r.json()["code"] == -2013 and r.json()["msg"] == "Order does not exist."
    r = _call(xs, key, secret, "DELETE", "/api/v3/order", symbol="BTCUSDT", orderId=987654321)
    assert r.json()["code"] == -2011 and r.json()["msg"] == "Unknown order sent."
    r = _call(xs, key, secret, "GET", "/api/v3/order", symbol="BTCUSDT")
    assert r.json()["code"] == -1102

    placed = _call(xs, key, secret, "POST", "/api/v3/order", **LIMIT, price="20000", quantity="0.001",
                   newClientOrderId="x-TKT5PX2F0123456789abcdef012345")  # fmt: skip
    assert placed.status_code == 200 and "code" not in placed.json()
    assert placed.json()["clientOrderId"] == "x-TKT5PX2F0123456789abcdef012345"
    dup = _call(xs, key, secret, "POST", "/api/v3/order", **LIMIT, price="20000", quantity="0.001",
                newClientOrderId="x-TKT5PX2F0123456789abcdef012345")  # fmt: skip
    assert dup.json() == {"code": -2010, "msg": "Duplicate order sent.", "reason": "duplicate_order"}

    # A second account takes the order; cancelling it afterwards is refused precisely.
    _, key2, secret2 = _account(xs)
    taken = _call(xs, key2, secret2, "POST", "/api/v3/order", symbol="BTCUSDT", side="SELL", type="MARKET",
                  quantity="0.001")  # fmt: skip
    assert taken.json()["status"] == "FILLED"
    oid = placed.json()["orderId"]
    r = _call(xs, key, secret, "DELETE", "/api/v3/order", symbol="BTCUSDT", orderId=oid)
    assert r.json()["code"] == -2011 and f"order {oid} is FILLED" in r.json()["msg"]

    maker = _call(xs, key, secret, "POST", "/api/v3/order", symbol="BTCUSDT", side="SELL", type="LIMIT",
                  timeInForce="GTC", price="30000", quantity="0.001")  # fmt: skip
    assert maker.status_code == 200
    cross = _call(xs, key2, secret2, "POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="LIMIT_MAKER",
                  price="30000", quantity="0.001")  # fmt: skip
    assert cross.json()["msg"] == "Order would immediately match and take."
    check_invariants(xs.services)


def test_withdrawal_errors(xs):
    _, key, secret = _account(xs, scopes=("read", "withdraw"), ips=["127.0.0.1/32", "::1"], daily_withdraw_cap="150")
    cases = [
        ({"coin": "USDT", "address": "not-an-address", "amount": "20"}, -1102, "Invalid address"),
        ({"coin": "USDT", "address": ETH_ADDR, "amount": "-5"}, -1100, "Illegal characters"),
        ({"coin": "USDT", "address": ETH_ADDR, "amount": "ten"}, -1100, "Illegal characters"),
        ({"coin": "USDT", "address": ETH_ADDR, "amount": "1.000000001"}, -1111, "Precision is over"),
        ({"coin": "USDT", "address": ETH_ADDR, "amount": "5000"}, -2010,
         "Account has insufficient balance for requested action."),
        ({"coin": "USDT", "address": ETH_ADDR, "amount": "1"}, -4026, "at least 10"),
        ({"coin": "USDT", "address": ETH_ADDR, "amount": "151"}, -2010, "daily cap of 150 USDT"),
        ({"coin": "DOGE", "address": ETH_ADDR, "amount": "20"}, -1102, "Unknown coin"),
    ]  # fmt: skip
    for params, code, msg in cases:
        r = _call(xs, key, secret, "POST", "/sapi/v1/capital/withdraw/apply", **params)
        assert r.status_code in (400, 403) and r.json()["code"] == code and msg in r.json()["msg"], (params, r.text)
    ok = _call(xs, key, secret, "POST", "/sapi/v1/capital/withdraw/apply", coin="USDT", address=ETH_ADDR, amount="100")
    assert ok.status_code == 200 and set(ok.json()) == {"id"}
    over = _call(xs, key, secret, "POST", "/sapi/v1/capital/withdraw/apply", coin="USDT", address=ETH_ADDR, amount="60")
    assert over.status_code == 403 and "has no operation privilege" in over.json()["msg"]
    assert "100 USDT already withdrawn in the last 24 hours" in over.json()["msg"]
    check_invariants(xs.services)


def test_scopes_name_what_is_missing(xs):
    _, key, secret = _account(xs, scopes=("read",))
    r = _call(xs, key, secret, "POST", "/api/v3/order", **LIMIT, price="20000", quantity="0.001")
    assert r.status_code == 401 and "needs the 'trade' scope and the key has read" in r.json()["msg"]
    r = _call(xs, key, secret, "POST", "/sapi/v1/capital/withdraw/apply", coin="USDT", address=ETH_ADDR, amount="20")
    assert "needs the 'withdraw' scope" in r.json()["msg"]
    _, key, secret = _account(xs, scopes=("read", "trade"), symbols=["ETHBTC"])
    r = _call(xs, key, secret, "POST", "/api/v3/order", **LIMIT, price="20000", quantity="0.001")
    assert "has no operation privilege for symbol BTCUSDT: it may trade only ETHBTC" in r.json()["msg"]
    _, key, secret = _account(xs, scopes=("read", "trade"), max_notional="50")
    r = _call(xs, key, secret, "POST", "/api/v3/order", **LIMIT, price="20000", quantity="0.003")
    assert r.status_code == 403
    assert "maximum notional of 50 USDT: this order's notional is 60 USDT" in r.json()["msg"]


def test_success_bodies_have_no_code_key(xs):
    _, key, secret = _account(xs)
    for method, path, params in [
        ("GET", "/api/v3/account", {}),
        ("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}),
        ("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}),
        ("GET", "/sapi/v1/capital/deposit/hisrec", {}),
        ("GET", "/sapi/v1/capital/withdraw/history", {}),
        ("POST", "/api/v3/order/test", {**LIMIT, "price": "20000", "quantity": "0.001"}),
    ]:
        r = _call(xs, key, secret, method, path, **params)
        assert r.status_code == 200, (path, r.text)
        assert not (isinstance(r.json(), dict) and "code" in r.json()), path
    import httpx

    for path in ("/api/v3/exchangeInfo", "/api/v3/depth?symbol=BTCUSDT", "/api/v3/ticker/24hr",
                 "/api/v3/ticker/price?symbol=BTCUSDT", "/api/v3/ticker/bookTicker", "/api/v3/trades?symbol=ETHBTC",
                 "/api/v3/klines?symbol=BTCUSDT&interval=1h", "/api/v3/time"):  # fmt: skip
        r = httpx.get(xs.url + path)
        assert r.status_code == 200 and not (isinstance(r.json(), dict) and "code" in r.json()), path
    r = httpx.get(xs.url + "/api/v3/klines?symbol=BTCUSDT&interval=7m")
    assert r.status_code == 400 and r.json()["code"] == -1120  # Binance: invalid interval
    r = httpx.get(xs.url + "/api/v3/depth?symbol=NOPE")
    assert r.json()["code"] == -1121


def _install_fault(svc) -> None:
    """Make the database refuse the fill rows of one specific trade size: a failure after the order,
    the trade and the maker updates were written, in the middle of matching."""
    with svc.db.transaction() as s:
        if svc.db.is_sqlite:
            s.execute(text("CREATE TRIGGER IF NOT EXISTS kp_test_fault BEFORE INSERT ON ex_fills "
                           "WHEN NEW.qty = 78000 BEGIN SELECT RAISE(ABORT, 'injected fault'); END"))  # fmt: skip
        else:
            s.execute(text("CREATE OR REPLACE FUNCTION kp_test_fault() RETURNS trigger AS $$ BEGIN "
                           "IF NEW.qty = 78000 THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN NEW; END $$ "
                           "LANGUAGE plpgsql"))  # fmt: skip
            s.execute(text("DROP TRIGGER IF EXISTS kp_test_fault ON ex_fills"))
            s.execute(text("CREATE TRIGGER kp_test_fault BEFORE INSERT ON ex_fills FOR EACH ROW "
                           "EXECUTE FUNCTION kp_test_fault()"))  # fmt: skip


def _remove_fault(svc) -> None:
    with svc.db.transaction() as s:
        s.execute(text("DROP TRIGGER IF EXISTS kp_test_fault" + ("" if svc.db.is_sqlite else " ON ex_fills")))


def _snapshot(svc, user_ids):
    with svc.db.read() as s:
        c = s.connection()
        return (
            c.execute(text("SELECT COUNT(*) FROM ex_orders")).scalar_one(),
            c.execute(text("SELECT COUNT(*) FROM ex_trades")).scalar_one(),
            c.execute(text("SELECT COUNT(*) FROM ex_ledger")).scalar_one(),
            sorted(c.execute(text("SELECT order_id, remaining FROM ex_book")).all()),
            [svc.exchange.balances(u) for u in user_ids],
        )


def test_failure_mid_matching_leaves_nothing_half_applied(xs):
    maker, mkey, msecret = _account(xs)
    taker, tkey, tsecret = _account(xs)
    r = _call(xs, mkey, msecret, "POST", "/api/v3/order", symbol="BTCUSDT", side="SELL", type="LIMIT",
              timeInForce="GTC", price="20000", quantity="0.01")  # fmt: skip
    assert r.status_code == 200
    before = _snapshot(xs.services, [maker.id, taker.id])
    _install_fault(xs.services)
    try:
        r = _call(xs, tkey, tsecret, "POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
                  quantity="0.00078")  # fmt: skip
        assert r.status_code == 500 and r.json()["code"] == -1000
        assert "may not have been processed" in r.json()["msg"]
        assert _snapshot(xs.services, [maker.id, taker.id]) == before
    finally:
        _remove_fault(xs.services)
    r = _call(xs, tkey, tsecret, "POST", "/api/v3/order", symbol="BTCUSDT", side="BUY", type="MARKET",
              quantity="0.00078")  # fmt: skip
    assert r.json()["status"] == "FILLED"
    check_invariants(xs.services)
