"""Raw, structurally hostile payloads with VALID signatures on every signed Binance route.

The hypothesis fuzzer (test_fuzz_binance.py) percent-encodes every value; here the signed string
itself is malformed: bare names, empty names, stray '%', raw '+', repeated names, '=' in values,
huge and unicode numbers, very many parameters, JSON and multipart bodies. Whatever the input:
no 5xx, a Binance error body, and the keep-alive connection survives.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from kptest.backends import db_scope
from kptest.clients import ed25519_keypair, ed25519_sign, hmac_sign, now_ms
from kptest.exchange import ExchangeServer, exchange_server

ROUTES = [
    ("POST", "/api/v3/order"),
    ("POST", "/api/v3/order/test"),
    ("GET", "/api/v3/order"),
    ("DELETE", "/api/v3/order"),
    ("GET", "/api/v3/openOrders"),
    ("GET", "/api/v3/allOrders"),
    ("GET", "/api/v3/myTrades"),
    ("GET", "/api/v3/account"),
    ("GET", "/sapi/v1/account/apiRestrictions"),
    ("GET", "/sapi/v1/capital/deposit/hisrec"),
    ("GET", "/sapi/v1/capital/withdraw/history"),
    ("POST", "/sapi/v1/capital/withdraw/apply"),
]

# Raw fragments put in front of "timestamp=...", exactly as written (not encoded by the test).
RAW = [
    "", "&", "&&&", "=", "==", "=1", "symbol", "symbol=", "symbol==BTCUSDT", "symbol=BTC=USDT",
    "symbol=BTCUSDT&symbol=BTCUSDT", "symbol=BTCUSDT&SYMBOL=ETHUSDT", "%", "%%", "%zz=1", "a=%",
    "a=%2", "a=%ff", "a=%c3%28", "a=%ed%a0%80", "%00=1", "a=%00", "a=+", "+=+", "a=1+2",
    "symbol=BTCUSDT&orderId=%EF%BC%91%EF%BC%92", "orderId=%D9%A1", "orderId=1e999999999",
    "orderId=" + "9" * 4000, "orderId=-0", "orderId=0x10", "orderId=1.5", "orderId=-9223372036854775809",
    "orderId=18446744073709551616", "limit=1e3", "limit=-1", "limit=%2B1", "startTime=1e999999999",
    "startTime=99999999999999999999999", "endTime=-99999999999999999999", "fromId=NaN", "offset=inf",
    "recvWindow=1e-320", "recvWindow=0.0000001", "recvWindow=-0", "recvWindow=%2B5000",
    "recvWindow=5000%00", "recvWindow=" + "9" * 400, "recvWindow=NaN", "recvWindow=5_000",
    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1e999999999&price=1",
    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=" + "9" * 300,
    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=%EF%BC%91&price=20000",
    "symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=-10",
    "symbol=BTCUSDT&side=BUY&type=MARKET&quoteOrderQty=1e-999999999",
    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=20000&newClientOrderId="
    + "x" * 5000,
    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=20000&newClientOrderId=%00",
    "coin=USDT&address=0xabc&amount=1e999999999", "coin=USDT&address=&amount=10",
    "coin=USDT&address=%00&amount=10", "coin=USDT&address=0xabc&amount=-10",
    "coin=USDT&address=0xabc&amount=10&network=%F0%9F%92%A9", "coin=%F0%9F%92%A9&address=a&amount=1",
    "symbols=" + "%5B" * 3000, "x" * 20000, "&".join(f"p{i}=1" for i in range(3000)),
    "a[]=1&a[]=2", "a[b][c]=1", "signature", "signatur=1", "timestamp=", "timestamp",
]  # fmt: skip

HOSTILE_TIMESTAMPS = ["", "%D9%A1%D9%A2", "1e12", "1" * 40, "-1", "0", "99999999999999999999", " 1", "1.0", "+1"]


@pytest.fixture(scope=db_scope("module"))
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(rate_limit_per_key="1000000/minute")) as srv:
        yield srv


@pytest.fixture(scope=db_scope("module"))
def keys(xs) -> list[dict[str, Any]]:
    svc = xs.services
    user = svc.accounts.create_user(f"atk-fuzz-{secrets.token_hex(4)}@example.com", "correct horse battery staple")
    svc.exchange.wallet.credit(user.id, "USDT", "1000")
    r = svc.keys.build_restrictions(ips=["127.0.0.1"])
    scopes = ("read", "trade", "withdraw")
    h = svc.keys.create(user.id, scopes=scopes, restrictions=r, step_up=StepUp.operator())
    priv, pub = ed25519_keypair()
    e = svc.keys.create(
        user.id, scopes=scopes, restrictions=r, key_type="ed25519", public_key=pub, step_up=StepUp.operator()
    )
    return [
        {"api_key": h.info.api_key, "sign": lambda p, s=h.secret: hmac_sign(s, p)},
        {"api_key": e.info.api_key, "sign": lambda p, k=priv: ed25519_sign(k, p)},
    ]


def _check(r: httpx.Response, where: str) -> None:
    assert r.status_code < 500, f"{where}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("connection", "").lower() != "close", f"{where}: connection dropped"
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body.get("code"), int) and body["code"] < 0, f"{where}: {body}"


def _send(http: httpx.Client, method: str, path: str, key: dict[str, Any], payload: str, **kw: Any) -> httpx.Response:
    signed = f"{payload}&signature={key['sign'](payload)}"
    headers = {"X-MBX-APIKEY": key["api_key"], **kw.pop("headers", {})}
    if method == "POST" and not kw.pop("in_query", False):
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return http.request(method, path, content=signed, headers=headers, **kw)
    return http.request(method, f"{path}?{signed}", headers=headers, **kw)


def test_raw_hostile_payloads(xs, keys):
    with httpx.Client(base_url=xs.url, timeout=20) as http:
        for method, path in ROUTES:
            for i, raw in enumerate(RAW):
                key = keys[i % 2]
                payload = (f"{raw}&" if raw else "") + f"timestamp={now_ms()}"
                _check(_send(http, method, path, key, payload), f"{method} {path} {raw[:60]!r}")
            for ts in HOSTILE_TIMESTAMPS:
                _check(_send(http, method, path, keys[0], f"timestamp={ts}"), f"{method} {path} ts={ts!r}")
        # The connection still serves a good request after all of that.
        ok = _send(http, "GET", "/api/v3/account", keys[0], f"timestamp={now_ms()}")
        assert ok.status_code == 200, ok.text


def test_hostile_bodies_and_headers(xs, keys):
    k = keys[0]
    with httpx.Client(base_url=xs.url, timeout=20) as http:
        ts = f"timestamp={now_ms()}"
        cases: list[tuple[str, dict[str, Any]]] = [
            ("json body", {"headers": {"Content-Type": "application/json"}}),
            ("multipart", {"headers": {"Content-Type": "multipart/form-data; boundary=x"}}),
            ("no content type", {"headers": {"Content-Type": ""}}),
            ("charset", {"headers": {"Content-Type": "application/x-www-form-urlencoded; charset=utf-16"}}),
        ]
        for where, kw in cases:
            _check(_send(http, "POST", "/api/v3/order", k, ts, **kw), where)
        # A JSON body carrying the parameters, signed as sent.
        body = json.dumps({"symbol": "BTCUSDT", "a": [[[[[[[[[[{}]]]]]]]]]], "timestamp": now_ms()})
        _check(
            http.post(
                "/api/v3/order", content=f"{body}&signature={hmac_sign('x', body)}",
                headers={"X-MBX-APIKEY": k["api_key"], "Content-Type": "application/json"},
            ),
            "json",
        )  # fmt: skip
        # Raw non-ASCII bytes in the signed string (a careless client).
        for raw in (b"a=\xff", b"a=\xc3\xa9", b"\x00=\x00", "symbol=BTC\u0130".encode()):
            payload = raw + f"&timestamp={now_ms()}".encode()
            sig = hmac_sign("x", "x")  # the payload is not ASCII: refused before any signature check
            r = http.post(
                "/api/v3/order/test", content=payload + f"&signature={sig}".encode(),
                headers={"X-MBX-APIKEY": k["api_key"], "Content-Type": "application/x-www-form-urlencoded"},
            )  # fmt: skip
            _check(r, repr(raw))
        # Hostile X-MBX-APIKEY headers.
        for header in (
            "",
            "kp_live_" + "A" * 5000,
            k["api_key"].upper(),
            k["api_key"] + " x",
            k["api_key"] + "," + k["api_key"],
        ):  # fmt: skip (a DEL byte is an HTTP-level 400 + close)
            payload = f"timestamp={now_ms()}"
            r = http.get(f"/api/v3/account?{payload}&signature={k['sign'](payload)}", headers={"X-MBX-APIKEY": header})
            _check(r, f"header {header[:40]!r}")
        ok = _send(http, "GET", "/api/v3/account", k, f"timestamp={now_ms()}")
        assert ok.status_code == 200, ok.text
