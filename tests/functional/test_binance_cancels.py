"""``DELETE /api/v3/openOrders`` and ``POST /api/v3/order/cancelReplace`` over real HTTP: what Binance
answers in every outcome, funds exact to the unit after each (the ledger invariants hold), one
transaction per request, no reach into another account's orders, and a precise error for bad input
that leaves everything as it was."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.exchange.errors import CancelRejected
from keyplane.exchange.orders import Placement, RecvWindowPassed
from keyplane.exchange.params import parse_new_order
from kptest.backends import db_scope
from kptest.clients import hmac_sign, now_ms
from kptest.exchange import ExchangeServer, check_invariants, clear_books, exchange_server, signed_request

SYM = "BTCUSDT"
REPLACE = "/api/v3/order/cancelReplace"
BID = {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01"}


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings()) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _empty_books(xs) -> Iterator[None]:
    clear_books(xs.services)
    yield
    clear_books(xs.services)


class Account:
    def __init__(self, xs: ExchangeServer, scopes=("read", "trade"), **credit: str) -> None:
        svc = xs.services
        self.xs = xs
        self.user = svc.accounts.create_user(f"c{secrets.token_hex(6)}@example.com", "correct horse battery staple")
        for asset, amount in credit.items():
            svc.exchange.wallet.credit(self.user.id, asset, amount)
        self.key = svc.keys.create(self.user.id, scopes=scopes, step_up=StepUp.operator())

    def call(self, method: str, path: str, **params) -> httpx.Response:
        return signed_request(method, self.xs.url, path, self.key.info.api_key, self.key.secret, params)

    def order(self, base: dict | None = None, **params) -> dict:
        r = self.call("POST", "/api/v3/order", **{**(base or {}), **params})
        assert r.status_code == 200, r.text
        return r.json()

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        """(available, locked) as decimals."""
        avail, locked = self.xs.services.exchange.balances(self.user.id)[asset]
        scale = Decimal(10) ** -self.xs.services.exchange.assets[asset].decimals
        return avail * scale, locked * scale

    def open_ids(self, symbol: str = SYM) -> list[int]:
        r = self.call("GET", "/api/v3/openOrders", symbol=symbol)
        assert r.status_code == 200, r.text
        return [o["orderId"] for o in r.json()]

    def status(self, order_id: int, symbol: str = SYM) -> str:
        return self.call("GET", "/api/v3/order", symbol=symbol, orderId=order_id).json()["status"]


def D(x: str) -> Decimal:
    return Decimal(x)


def _error(r: httpx.Response, status: int, code: int, msg: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code and body["msg"] == msg, body
    return body


# -- DELETE /api/v3/openOrders -------------------------------------------------------------------


def test_cancel_all_cancels_only_this_accounts_open_orders_in_the_symbol(xs):
    alice = Account(xs, USDT="1000", BTC="1", ETH="1")
    bob = Account(xs, BTC="1", USDT="1000")
    bobs = bob.order(BID, quantity="0.001", price="19000")
    filled = alice.order({**BID, "side": "SELL"}, quantity="0.001", price="19000")  # takes Bob's bid
    assert filled["status"] == "FILLED"
    bids = [alice.order(BID, quantity="0.001", price=f"{20000 + i}") for i in range(12)]
    asks = [alice.order({**BID, "side": "SELL"}, quantity="0.001", price=f"{30000 + i}") for i in range(3)]
    other_market = alice.order({**BID, "symbol": "ETHUSDT"}, price="2000")  # 0.01 ETH: 20 USDT locked
    # Bob sells 0.0005 into Alice's best bid (20011): that order is partially filled when cancelled.
    taken = bob.order(symbol=SYM, side="SELL", type="MARKET", quantity="0.0005")
    assert taken["status"] == "FILLED" and taken["fills"][0]["price"] == "20011.00000000"

    r = alice.call("DELETE", "/api/v3/openOrders", symbol=SYM)
    assert r.status_code == 200, r.text
    cancelled = r.json()
    expected = sorted(o["orderId"] for o in bids + asks)
    assert [c["orderId"] for c in cancelled] == expected  # oldest first
    by_id = {o["orderId"]: o for o in bids + asks}
    for c in cancelled:
        placed = by_id[c["orderId"]]
        assert c["status"] == "CANCELED" and c["symbol"] == SYM and c["orderListId"] == -1
        assert c["origClientOrderId"] == c["clientOrderId"] == placed["clientOrderId"]
        assert c["price"] == placed["price"] and c["origQty"] == placed["origQty"] and c["side"] == placed["side"]
        assert isinstance(c["transactTime"], int) and "code" not in c
    partial = next(c for c in cancelled if c["price"] == "20011.00000000")
    assert partial["executedQty"] == "0.00050000" and partial["cummulativeQuoteQty"] == "10.00550000"

    assert alice.open_ids() == [] and alice.open_ids("ETHUSDT") == [other_market["orderId"]]
    assert bob.open_ids() == []  # Bob's bid was taken; nothing of his was cancelled
    assert bob.status(bobs["orderId"]) == "FILLED"
    # Alice: 1000 USDT - 10.0055 paid for 0.0005 BTC - 20 still locked for ETH + 19 sold at 19000 less 0.1%;
    # BTC: 1 + 0.0005 less the 0.1% maker fee - 0.001 sold; nothing of BTCUSDT is locked any more.
    assert alice.balance("USDT") == (D("1000") - D("10.0055") - D("20") + D("18.981"), D("20"))
    assert alice.balance("BTC") == (D("1") + D("0.0004995") - D("0.001"), D("0"))
    check_invariants(xs.services)

    again = alice.call("DELETE", "/api/v3/openOrders", symbol=SYM)
    _error(again, 400, -2011, "Unknown order sent.")


def test_cancel_all_of_many_orders_frees_every_unit(xs):
    alice = Account(xs, USDT="100000", BTC="10")
    ex = xs.services.exchange
    n = 150
    for i in range(n):  # placed through the service: the cancel is what runs over HTTP
        side, price = ("BUY", 10000 + i) if i % 2 else ("SELL", 40000 + i)
        order = parse_new_order({**BID, "side": side, "price": str(price), "quantity": "0.00123"}, ex.markets)
        ex.orders.place(alice.user.id, order)
    assert alice.balance("USDT")[1] > 0 and alice.balance("BTC")[1] > 0
    r = alice.call("DELETE", "/api/v3/openOrders", symbol=SYM.lower())
    assert r.status_code == 200, r.text
    assert len(r.json()) == n and {c["status"] for c in r.json()} == {"CANCELED"}
    assert alice.balance("USDT") == (D("100000"), D("0"))
    assert alice.balance("BTC") == (D("10"), D("0"))
    depth = httpx.get(f"{xs.url}/api/v3/depth", params={"symbol": SYM}).json()
    assert depth["bids"] == [] and depth["asks"] == []
    check_invariants(xs.services)


def test_cancel_all_refusals(xs):
    alice = Account(xs, USDT="1000")
    kept = alice.order(BID, price="20000")
    for params, code, msg in [
        ({}, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ({"symbol": "DOGEUSDT"}, -1121, "Invalid symbol."),
        ({"symbol": "ETHUSDT"}, -2011, "Unknown order sent."),  # open orders elsewhere do not count
    ]:
        _error(alice.call("DELETE", "/api/v3/openOrders", **params), 400, code, msg)
    reader = Account(xs, scopes=("read",))
    r = signed_request("DELETE", xs.url, "/api/v3/openOrders", reader.key.info.api_key, reader.key.secret,
                       {"symbol": SYM})  # fmt: skip
    assert r.json()["code"] == -2015 and "needs the 'trade' scope" in r.json()["msg"], r.text
    assert alice.open_ids() == [kept["orderId"]]
    assert alice.balance("USDT") == (D("800"), D("200"))


def test_a_key_limited_to_other_symbols_cancels_nothing(xs):
    alice = Account(xs, USDT="1000")
    kept = alice.order(BID, price="20000")
    svc = xs.services
    eth_only = svc.keys.create(alice.user.id, scopes=("read", "trade"), step_up=StepUp.operator(),
                               restrictions=svc.keys.build_restrictions(symbols=["ETHUSDT"]))  # fmt: skip
    key, secret = eth_only.info.api_key, eth_only.secret
    for method, path, params in [
        ("DELETE", "/api/v3/openOrders", {"symbol": SYM}),
        ("POST", REPLACE, {**BID, "price": "19000", "cancelReplaceMode": "STOP_ON_FAILURE",
                           "cancelOrderId": kept["orderId"]}),
    ]:  # fmt: skip
        r = signed_request(method, xs.url, path, key, secret, params)
        assert r.json()["code"] == -2015 and r.json()["reason"] == "symbol_not_allowed", r.text
        assert "may trade only ETHUSDT" in r.json()["msg"]
    assert alice.open_ids() == [kept["orderId"]]


# -- POST /api/v3/order/cancelReplace ------------------------------------------------------------


def _replace(account: Account, mode: str, cancel_order_id: int | None = None, **params) -> httpx.Response:
    ref = {} if cancel_order_id is None else {"cancelOrderId": cancel_order_id}
    return account.call("POST", REPLACE, cancelReplaceMode=mode, **ref, **params)


@pytest.mark.parametrize("mode", ["STOP_ON_FAILURE", "ALLOW_FAILURE"])
def test_replace_uses_the_funds_the_cancel_frees(xs, mode):
    alice = Account(xs, USDT="250")
    old = alice.order(BID, price="20000", newClientOrderId="grid-1")  # 200 USDT locked of 250
    assert alice.balance("USDT") == (D("50"), D("200"))
    r = _replace(alice, mode, old["orderId"], **{**BID, "quantity": "0.012"}, price="20000",
                 newClientOrderId="grid-2", cancelNewClientOrderId="cancel-grid-1")  # fmt: skip
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"cancelResult", "newOrderResult", "cancelResponse", "newOrderResponse"}
    assert doc["cancelResult"] == doc["newOrderResult"] == "SUCCESS"
    c, n = doc["cancelResponse"], doc["newOrderResponse"]
    assert c["orderId"] == old["orderId"] and c["status"] == "CANCELED"
    assert c["origClientOrderId"] == "grid-1" and c["clientOrderId"] == "cancel-grid-1"
    assert n["clientOrderId"] == "grid-2" and n["status"] == "NEW" and n["origQty"] == "0.01200000"
    assert n["fills"] == [] and n["transactTime"] >= c["transactTime"]
    assert alice.open_ids() == [n["orderId"]] and alice.status(old["orderId"]) == "CANCELED"
    assert alice.balance("USDT") == (D("10"), D("240"))
    check_invariants(xs.services)


def test_replace_that_takes_liquidity_reports_its_fills(xs):
    alice = Account(xs, USDT="1000")
    bob = Account(xs, BTC="1")
    ask = bob.order({**BID, "side": "SELL"}, price="21000")
    old = alice.order(BID, price="20000")
    r = _replace(alice, "STOP_ON_FAILURE", old["orderId"], **BID, price="21000", newOrderRespType="FULL")
    assert r.status_code == 200, r.text
    n = r.json()["newOrderResponse"]
    assert n["status"] == "FILLED" and n["executedQty"] == "0.01000000" and len(n["fills"]) == 1
    assert n["fills"][0]["commission"] == "0.00001000" and n["fills"][0]["commissionAsset"] == "BTC"
    assert bob.status(ask["orderId"]) == "FILLED"
    assert alice.balance("USDT") == (D("790"), D("0"))
    assert alice.balance("BTC") == (D("0.00999"), D("0"))
    ack = alice.order(BID, price="20000")
    r = _replace(alice, "STOP_ON_FAILURE", ack["orderId"], **BID, price="19000", newOrderRespType="ACK")
    n = r.json()["newOrderResponse"]
    assert set(n) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}, n
    check_invariants(xs.services)


def test_stop_on_failure_stops_when_the_cancel_fails(xs):
    alice = Account(xs, USDT="1000")
    kept = alice.order(BID, price="20000")
    before = alice.balance("USDT")
    r = _replace(alice, "STOP_ON_FAILURE", 987654321, **BID, price="19000")
    body = _error(r, 400, -2022, "Order cancel-replace failed.")
    assert body["data"] == {
        "cancelResult": "FAILURE",
        "newOrderResult": "NOT_ATTEMPTED",
        "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
        "newOrderResponse": None,
    }
    assert alice.open_ids() == [kept["orderId"]] and alice.balance("USDT") == before
    check_invariants(xs.services)


@pytest.mark.parametrize("mode", ["STOP_ON_FAILURE", "ALLOW_FAILURE"])
@pytest.mark.parametrize(
    ("new", "why"),
    [
        ({"type": "LIMIT_MAKER", "price": "21000", "timeInForce": ""}, "Order would immediately match and take."),
        ({"price": "20000", "quantity": "0.05"}, "Account has insufficient balance for requested action."),
    ],
    ids=["would-take", "insufficient"],
)
def test_a_refused_new_order_leaves_the_cancel_standing(xs, mode, new, why):
    alice = Account(xs, USDT="250")
    bob = Account(xs, BTC="1")
    bob.order({**BID, "side": "SELL"}, price="21000")
    old = alice.order(BID, price="20000")
    r = _replace(alice, mode, old["orderId"], **{**BID, **new})
    body = _error(r, 409, -2021, "Order cancel-replace partially failed.")
    data = body["data"]
    assert data["cancelResult"] == "SUCCESS" and data["newOrderResult"] == "FAILURE"
    assert data["cancelResponse"]["orderId"] == old["orderId"] and data["cancelResponse"]["status"] == "CANCELED"
    assert data["newOrderResponse"] == {"code": -2010, "msg": why}
    assert alice.open_ids() == [] and alice.status(old["orderId"]) == "CANCELED"
    all_orders = alice.call("GET", "/api/v3/allOrders", symbol=SYM).json()
    assert [o["orderId"] for o in all_orders] == [old["orderId"]]  # nothing of the new order was kept
    assert alice.balance("USDT") == (D("250"), D("0"))
    check_invariants(xs.services)


def test_allow_failure_places_the_new_order_when_the_cancel_fails(xs):
    alice = Account(xs, USDT="1000")
    bob = Account(xs, BTC="1")
    filled = alice.order(BID, price="20000")
    bob.order(symbol=SYM, side="SELL", type="MARKET", quantity="0.01")
    assert alice.status(filled["orderId"]) == "FILLED"
    r = _replace(alice, "ALLOW_FAILURE", filled["orderId"], **BID, price="19000")
    body = _error(r, 409, -2021, "Order cancel-replace partially failed.")
    data = body["data"]
    assert data["cancelResult"] == "FAILURE" and data["newOrderResult"] == "SUCCESS"
    assert data["cancelResponse"] == {
        "code": -2011,
        "msg": f"Unknown order sent: order {filled['orderId']} is FILLED and only open orders can be canceled.",
    }
    new_id = data["newOrderResponse"]["orderId"]
    assert data["newOrderResponse"]["status"] == "NEW" and alice.open_ids() == [new_id]
    assert alice.balance("USDT") == (D("1000") - D("200") - D("190"), D("190"))
    check_invariants(xs.services)


def test_allow_failure_when_both_halves_fail(xs):
    alice = Account(xs, USDT="100")
    r = _replace(alice, "ALLOW_FAILURE", 987654321, **BID, price="20000")
    body = _error(r, 400, -2022, "Order cancel-replace failed.")
    assert body["data"] == {
        "cancelResult": "FAILURE",
        "newOrderResult": "FAILURE",
        "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
        "newOrderResponse": {"code": -2010, "msg": "Account has insufficient balance for requested action."},
    }
    assert alice.call("GET", "/api/v3/allOrders", symbol=SYM).json() == []
    assert alice.balance("USDT") == (D("100"), D("0"))


def test_another_account_can_neither_cancel_nor_replace(xs):
    alice = Account(xs, USDT="1000")
    mallory = Account(xs, USDT="1000")
    kept = alice.order(BID, price="20000", newClientOrderId="alice-1")
    _error(mallory.call("DELETE", "/api/v3/openOrders", symbol=SYM), 400, -2011, "Unknown order sent.")
    for ref in ({"cancelOrderId": kept["orderId"]}, {"cancelOrigClientOrderId": "alice-1"}):
        r = mallory.call("POST", REPLACE, cancelReplaceMode="STOP_ON_FAILURE", **ref, **BID, price="19000")
        body = _error(r, 400, -2022, "Order cancel-replace failed.")
        assert body["data"]["cancelResponse"] == {"code": -2011, "msg": "Unknown order sent."}
    # ALLOW_FAILURE: Mallory's own new order is placed; Alice's order is untouched.
    r = mallory.call("POST", REPLACE, cancelReplaceMode="ALLOW_FAILURE", cancelOrderId=kept["orderId"], **BID,
                     price="19000")  # fmt: skip
    body = _error(r, 409, -2021, "Order cancel-replace partially failed.")
    assert body["data"]["cancelResult"] == "FAILURE" and body["data"]["newOrderResult"] == "SUCCESS"
    assert alice.open_ids() == [kept["orderId"]] and alice.balance("USDT") == (D("800"), D("200"))
    assert mallory.open_ids() == [body["data"]["newOrderResponse"]["orderId"]]
    assert mallory.balance("USDT") == (D("810"), D("190"))
    check_invariants(xs.services)


def test_order_id_and_client_id_must_name_the_same_order(xs):
    alice = Account(xs, USDT="1000")
    first = alice.order(BID, price="20000", newClientOrderId="first")
    alice.order(BID, price="19000", newClientOrderId="second")
    r = _replace(alice, "STOP_ON_FAILURE", first["orderId"], cancelOrigClientOrderId="second", **BID, price="18000")
    assert _error(r, 400, -2022, "Order cancel-replace failed.")["data"]["cancelResponse"]["code"] == -2011
    r = alice.call("DELETE", "/api/v3/order", symbol=SYM, orderId=first["orderId"], origClientOrderId="second")
    _error(r, 400, -2011, "Unknown order sent.")
    assert len(alice.open_ids()) == 2
    r = _replace(alice, "STOP_ON_FAILURE", first["orderId"], cancelOrigClientOrderId="first", **BID, price="18000")
    assert r.status_code == 200, r.text
    r = _replace(alice, "STOP_ON_FAILURE", None, cancelOrigClientOrderId="second", **BID, price="17000")
    assert r.status_code == 200 and r.json()["cancelResponse"]["origClientOrderId"] == "second", r.text
    check_invariants(xs.services)


def test_cancel_restrictions(xs):
    alice = Account(xs, USDT="1000")
    bob = Account(xs, BTC="1")
    fresh = alice.order(BID, price="20000")
    r = _replace(alice, "STOP_ON_FAILURE", fresh["orderId"], cancelRestrictions="ONLY_PARTIALLY_FILLED", **BID,
                 price="19000")  # fmt: skip
    body = _error(r, 400, -2022, "Order cancel-replace failed.")
    assert body["data"]["cancelResponse"] == {
        "code": -2011,
        "msg": "Order was not canceled due to cancel restrictions.",
    }
    bob.order(symbol=SYM, side="SELL", type="MARKET", quantity="0.004")  # now PARTIALLY_FILLED
    r = _replace(alice, "STOP_ON_FAILURE", fresh["orderId"], cancelRestrictions="ONLY_NEW", **BID, price="19000")
    assert _error(r, 400, -2022, "Order cancel-replace failed.")["data"]["cancelResponse"]["code"] == -2011
    r = _replace(alice, "STOP_ON_FAILURE", fresh["orderId"], cancelRestrictions="only_partially_filled", **BID,
                 price="19000")  # fmt: skip
    assert r.status_code == 200 and r.json()["cancelResponse"]["executedQty"] == "0.00400000", r.text
    # 1000 - 80 paid for 0.004 BTC - 190 locked by the new bid
    assert alice.balance("USDT") == (D("730"), D("190"))
    check_invariants(xs.services)


REFUSALS = [
    ("mode missing", {"cancelReplaceMode": ""}, -1102,
     "Mandatory parameter 'cancelReplaceMode' was not sent, was empty/null, or malformed."),
    ("mode unknown", {"cancelReplaceMode": "SOMETIMES"}, -1102,
     "Invalid cancelReplaceMode 'SOMETIMES': use STOP_ON_FAILURE or ALLOW_FAILURE."),
    ("no order named", {"cancelOrderId": ""}, -1102,
     "Param 'cancelOrderId' or 'cancelOrigClientOrderId' must be sent, but both were empty/null!"),
    ("order id not a number", {"cancelOrderId": "12x"}, -1100, None),
    ("order id negative", {"cancelOrderId": "-5"}, -1100, None),
    ("client id with a NUL", {"cancelOrigClientOrderId": "a\x00b"}, -1100, None),
    ("cancel client id malformed", {"cancelNewClientOrderId": "no spaces"}, -1102,
     "Parameter 'cancelNewClientOrderId' must be 1-36 characters of letters, digits and . : / _ -"),
    ("cancel client id too long", {"cancelNewClientOrderId": "x" * 37}, -1102, None),
    ("cancelRestrictions unknown", {"cancelRestrictions": "ONLY_OLD"}, -1145, "Invalid cancelRestrictions"),
    ("rate limit mode unknown", {"orderRateLimitExceededMode": "PANIC"}, -1102,
     "Invalid orderRateLimitExceededMode: use DO_NOTHING or CANCEL_ONLY."),
    ("new price off tick", {"price": "20000.001"}, -1013,
     "Filter failure: PRICE_FILTER (price 20000.001 is not a multiple of the tick size 0.01)"),
    ("new notional too small", {"price": "100", "quantity": "0.001"}, -1013, None),
    ("new quantity missing", {"quantity": ""}, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed."),
    ("new side missing", {"side": ""}, -1102, None),
    ("new type unsupported", {"type": "STOP_LOSS_LIMIT"}, -1102, None),
    ("new client id malformed", {"newClientOrderId": "a b"}, -1102, None),
    ("unknown symbol", {"symbol": "DOGEUSDT"}, -1121, "Invalid symbol."),
]  # fmt: skip


@pytest.mark.parametrize(("case", "params", "code", "msg"), REFUSALS, ids=[c[0] for c in REFUSALS])
def test_bad_input_is_refused_before_anything_is_cancelled(xs, case, params, code, msg):
    alice = Account(xs, USDT="1000")
    kept = alice.order(BID, price="20000", newClientOrderId="kept")
    request = {**BID, "price": "19000", "cancelReplaceMode": "STOP_ON_FAILURE", "cancelOrderId": kept["orderId"],
               **params}  # fmt: skip
    r = alice.call("POST", REPLACE, **{k: v for k, v in request.items() if v != ""})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == code and "data" not in body, body
    if msg is not None:
        assert body["msg"] == msg, body
    assert alice.open_ids() == [kept["orderId"]] and alice.balance("USDT") == (D("800"), D("200"))


def test_a_replayed_cancel_replace_is_refused(xs):
    alice = Account(xs, USDT="1000")
    old = alice.order(BID, price="20000")
    payload = urlencode({**BID, "price": "19000", "cancelReplaceMode": "ALLOW_FAILURE",
                         "cancelOrderId": old["orderId"], "timestamp": now_ms()})  # fmt: skip
    body = f"{payload}&signature={hmac_sign(alice.key.secret, payload)}"
    headers = {"X-MBX-APIKEY": alice.key.info.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    first = httpx.post(xs.url + REPLACE, content=body, headers=headers)
    assert first.status_code == 200, first.text
    again = httpx.post(xs.url + REPLACE, content=body, headers=headers)
    assert again.json()["reason"] == "replayed", again.text
    assert alice.open_ids() == [first.json()["newOrderResponse"]["orderId"]]
    assert alice.balance("USDT") == (D("810"), D("190"))


def test_a_passed_recv_window_changes_nothing(xs):
    """The deadline is checked again inside the transaction, with the market locked (the service
    takes the deadline as a parameter: a request that waited past it is refused there)."""
    alice = Account(xs, USDT="1000")
    ex = xs.services.exchange
    m = ex.markets[SYM]
    old = alice.order(BID, price="20000")
    past = time.time() - 0.5
    with pytest.raises(RecvWindowPassed):
        ex.orders.cancel_all(alice.user.id, m, not_after_s=past)
    new = Placement(alice.user.id, parse_new_order({**BID, "price": "19000"}, ex.markets))
    with pytest.raises(RecvWindowPassed):
        ex.orders.cancel_replace(m, old["orderId"], None, new, allow_failure=True, not_after_s=past)
    assert alice.open_ids() == [old["orderId"]] and alice.balance("USDT") == (D("800"), D("200"))
    with pytest.raises(CancelRejected):
        ex.orders.cancel_all(alice.user.id, ex.markets["ETHUSDT"], not_after_s=time.time() + 5)
    check_invariants(xs.services)
