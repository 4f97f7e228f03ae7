"""Property-based fuzzing of the Binance-compatible surface with VALID signatures.

Every generated request is signed with a real key (HMAC and Ed25519), so its parameters get past the
verifier and reach the route's own parsing. Whatever the input: never a 5xx, the error body is
Binance's ``{"code": <int>, "msg": "..."}``, and the keep-alive connection survives the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from keyplane.accounts.stepup import StepUp
from kptest.backends import db_scope
from kptest.clients import ed25519_keypair, ed25519_sign, hmac_sign, now_ms
from kptest.exchange import ExchangeServer, clear_books, exchange_server

# (method, path, the parameters the route reads)
SIGNED = [
    ("POST", "/api/v3/order", ["symbol", "side", "type", "timeInForce", "price", "quantity", "quoteOrderQty",
                               "newClientOrderId", "selfTradePreventionMode", "newOrderRespType", "stopPrice",
                               "trailingDelta"]),
    ("POST", "/api/v3/order/cancelReplace", ["symbol", "side", "type", "timeInForce", "price", "quantity",
                                             "cancelReplaceMode", "cancelOrderId", "cancelOrigClientOrderId",
                                             "cancelNewClientOrderId", "cancelRestrictions", "stopPrice"]),
    ("DELETE", "/api/v3/openOrders", ["symbol"]),
    ("POST", "/api/v3/orderList/oco", ["symbol", "side", "quantity", "aboveType", "abovePrice", "aboveStopPrice",
                                       "aboveTrailingDelta", "aboveTimeInForce", "aboveClientOrderId", "belowType",
                                       "belowPrice", "belowStopPrice", "belowTrailingDelta", "belowTimeInForce",
                                       "belowClientOrderId", "listClientOrderId", "newOrderRespType"]),
    ("POST", "/api/v3/order/oco", ["symbol", "side", "quantity", "price", "stopPrice", "stopLimitPrice",
                                   "stopLimitTimeInForce", "limitClientOrderId", "stopClientOrderId",
                                   "listClientOrderId", "trailingDelta"]),
    ("DELETE", "/api/v3/orderList", ["symbol", "orderListId", "listClientOrderId"]),
    ("GET", "/api/v3/orderList", ["orderListId", "origClientOrderId"]),
    ("GET", "/api/v3/allOrderList", ["fromId", "startTime", "endTime", "limit"]),
    ("GET", "/api/v3/openOrderList", []),
    ("GET", "/api/v3/account/commission", ["symbol"]),
    ("GET", "/sapi/v1/asset/tradeFee", ["symbol"]),
    ("GET", "/sapi/v1/capital/config/getall", []),
    ("GET", "/sapi/v1/asset/assetDetail", ["asset"]),
    ("GET", "/sapi/v1/capital/deposit/address", ["coin", "network"]),
    ("GET", "/sapi/v1/capital/deposit/address/list", ["coin", "network"]),
    ("POST", "/api/v3/order/test", ["symbol", "side", "type", "timeInForce", "price", "quantity", "quoteOrderQty",
                                    "newClientOrderId"]),
    ("GET", "/api/v3/order", ["symbol", "orderId", "origClientOrderId"]),
    ("DELETE", "/api/v3/order", ["symbol", "orderId", "origClientOrderId"]),
    ("GET", "/api/v3/openOrders", ["symbol"]),
    ("GET", "/api/v3/allOrders", ["symbol", "limit", "orderId", "startTime", "endTime"]),
    ("GET", "/api/v3/myTrades", ["symbol", "startTime", "endTime", "fromId", "orderId", "limit"]),
    ("GET", "/api/v3/account", []),
    ("GET", "/sapi/v1/account/apiRestrictions", []),
    ("GET", "/sapi/v1/capital/deposit/hisrec", ["coin", "startTime", "endTime", "limit", "offset"]),
    ("GET", "/sapi/v1/capital/withdraw/history", ["coin", "startTime", "endTime", "limit", "offset"]),
    ("POST", "/sapi/v1/capital/withdraw/apply", ["coin", "address", "amount", "network", "addressTag"]),
]  # fmt: skip
PUBLIC = [
    ("/api/v3/exchangeInfo", ["symbol", "symbols"]),
    ("/api/v3/depth", ["symbol", "limit"]),
    ("/api/v3/trades", ["symbol", "limit"]),
    ("/api/v3/aggTrades", ["symbol", "limit", "startTime", "endTime", "fromId"]),
    ("/api/v3/klines", ["symbol", "interval", "limit", "startTime", "endTime"]),
    ("/api/v3/ticker/24hr", ["symbol", "symbols"]),
    ("/api/v3/ticker/price", ["symbol", "symbols"]),
    ("/api/v3/ticker/bookTicker", ["symbol", "symbols"]),
]
GOOD = {
    "symbol": ["BTCUSDT", "ETHUSDT", "btcusdt"], "side": ["BUY", "SELL"],
    "type": ["LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
    "aboveType": ["LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT"], "belowType": ["STOP_LOSS", "LIMIT_MAKER"],
    "aboveTimeInForce": ["GTC"], "belowTimeInForce": ["GTC", "IOC"], "stopLimitTimeInForce": ["GTC"],
    "stopPrice": ["19000", "21000"], "abovePrice": ["25000"], "belowPrice": ["15000"], "aboveStopPrice": ["24000"],
    "belowStopPrice": ["16000"], "stopLimitPrice": ["15900"], "trailingDelta": ["100", "5", "2000"],
    "cancelReplaceMode": ["STOP_ON_FAILURE", "ALLOW_FAILURE"],
    "timeInForce": ["GTC", "IOC", "FOK"], "price": ["20000", "0.01", "1000000"], "quantity": ["0.001", "1"],
    "quoteOrderQty": ["10", "5.5"], "coin": ["USDT", "ETH", "BTC"], "address": ["0x" + "ab" * 20],
    "amount": ["10", "20.5"], "network": ["ETH", "BTC"], "interval": ["1m", "1h", "1d"],
    "symbols": ['["BTCUSDT"]', '["BTCUSDT","ETHUSDT"]', '["BTCUSDT", "ETHBTC"]'],
    "newOrderRespType": ["ACK", "RESULT", "FULL"], "selfTradePreventionMode": ["NONE", "EXPIRE_TAKER"],
}  # fmt: skip
HOSTILE = [
    "", "\x00", "a\x00b", "１２３", "١٢٣", "²", "³d", "-1", "1e999999999", "NaN", "Infinity", "9" * 30,
    str(2**63), str(2**64), str(2**63 - 1), "0x10", " 1 ", "1.", ".5", "1_000", "null", "true", "123",
    "[[\"BTCUSDT\"]]", "[null]", "[1]", "{}", "[", "[" * 5000, "x" * 5000, "\ud7ff", "\ud800", "\u202e", "\r\n", "%00",
    "9999-12-31T23:59:59-12:00", "99999999999w", "BTCUSDT\x00", "0" * 25 + "1", "1" + "0" * 20 + ".5",
]  # fmt: skip


# Parameters that gate the rest of a route (an unknown symbol stops it at once): mostly valid, so
# the other parameters get to the code that reads them.
GATES = frozenset({"symbol", "side", "type", "timeInForce", "coin", "interval", "aboveType", "belowType"})


def _value(name: str) -> st.SearchStrategy[str]:
    good = st.sampled_from(GOOD.get(name, ["1", "100", "0"]))
    if name in GATES:
        return st.one_of(good, good, good, good, st.sampled_from(HOSTILE), st.text(max_size=20))
    return st.one_of(
        good,
        st.sampled_from(HOSTILE),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=80),
    )


def _params(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    if not names:
        return st.just({})
    return st.fixed_dictionaries({}, optional={n: _value(n) for n in names})


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(rate_limit_per_key="1000000/minute")) as srv:
        yield srv
        clear_books(srv.services)


@pytest.fixture(scope=db_scope("module"))
def keys(xs) -> list[dict[str, Any]]:
    """One HMAC and one Ed25519 key with every scope, on a funded account."""
    svc = xs.services
    user = svc.accounts.create_user("fuzz-binance@example.com", "correct horse battery staple")
    svc.exchange.wallet.credit(user.id, "USDT", "100000")
    svc.exchange.wallet.credit(user.id, "BTC", "10")
    svc.exchange.wallet.credit(user.id, "ETH", "10")
    scopes = ("read", "trade", "withdraw")
    restrictions = svc.keys.build_restrictions(ips=["127.0.0.1/32"])
    hmac_key = svc.keys.create(user.id, scopes=scopes, restrictions=restrictions, step_up=StepUp.operator())
    priv, pub = ed25519_keypair()
    ed_key = svc.keys.create(
        user.id, scopes=scopes, restrictions=restrictions, key_type="ed25519", public_key=pub, step_up=StepUp.operator()
    )
    return [
        {"api_key": hmac_key.info.api_key, "sign": lambda p, s=hmac_key.secret: hmac_sign(s, p)},
        {"api_key": ed_key.info.api_key, "sign": lambda p, k=priv: ed25519_sign(k, p)},
    ]


@pytest.fixture(scope=db_scope("module"))
def http(xs) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=xs.url, timeout=20) as client:
        yield client


def _encode(params: dict[str, str]) -> str:
    # urlencode percent-encodes UTF-8 (and NUL as %00); a lone surrogate cannot be UTF-8 at all,
    # so it travels as the bytes a careless client would send for it.
    return urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()}, quote_via=quote)


def _check(r: httpx.Response, where: str) -> None:
    event(f"HTTP {r.status_code}" + (f" code {r.json().get('code')}" if r.status_code >= 400 else ""))
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("connection", "").lower() != "close", f"{where}: the server dropped the connection"
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("code"), int) and body["code"] < 0, f"{where}: {body}"
        assert isinstance(body.get("msg"), str) and body["msg"], f"{where}: {body}"


_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def test_every_signed_binance_route_is_fuzzed():
    """A new signed route is fuzzed from the day it exists: it must be listed in SIGNED."""
    from fastapi.routing import APIRoute

    from keyplane.api.binance import ROUTERS
    from keyplane.auth.routes import ATTR

    routes = {
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and (rule := getattr(route.endpoint, ATTR, None)) is not None
        and rule.scope is not None
        for method in route.methods
    }  # fmt: skip
    assert routes - {(m, p) for m, p, _ in SIGNED} == set()


@_SETTINGS
@given(data=st.data())
def test_signed_routes_never_fail_with_5xx(xs, keys, http, data):
    method, path, names = data.draw(st.sampled_from(SIGNED), label="route")
    params = data.draw(_params(names), label="params")
    key = data.draw(st.sampled_from(keys), label="key")
    payload = _encode(params) + ("&" if params else "") + f"timestamp={now_ms()}"
    signed = f"{payload}&signature={key['sign'](payload)}"
    headers = {"X-MBX-APIKEY": key["api_key"]}
    if method == "POST":
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        r = http.request(method, path, content=signed, headers=headers)
    else:
        r = http.request(method, f"{path}?{signed}", headers=headers)
    # A signed request that fails here must fail on its parameters, never on its signature.
    if r.status_code >= 400:
        assert r.json().get("code") not in (-1022, -2014, -2015), (path, params, r.text)
    _check(r, f"{method} {path} {params!r}")


@_SETTINGS
@given(data=st.data())
def test_public_routes_never_fail_with_5xx(xs, http, data):
    path, names = data.draw(st.sampled_from(PUBLIC), label="route")
    params = data.draw(_params(names), label="params")
    r = http.get(f"{path}?{_encode(params)}")
    _check(r, f"GET {path} {params!r}")
