"""A restart in the middle: a server stops while a user-data stream is open and a stop order is
armed; a new server on the same database serves the same listenKey, and a trade fires the stop,
whose events reach the reconnected stream. Nothing the first server held in memory is needed."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from keyplane.accounts.stepup import StepUp
from keyplane.api.app import create_app
from keyplane.services import build_services
from kptest.exchange import check_invariants, clear_books, funded_user, signed_request, unique_markets_file
from kptest.server import start_in_thread
from kptest.streams import market_suffix, run, ws_url

WAIT_S = 10.0


def _account(svc, **credit):
    uid = funded_user(svc, **credit)
    issued = svc.keys.create(uid, scopes=("read", "trade"), step_up=StepUp.operator())
    return issued.info.api_key, issued.secret


def _order(url, key, **params):
    r = signed_request("POST", url, "/api/v3/order", key[0], key[1], params)
    assert r.status_code == 200, r.text
    return r.json()


async def _until(ws, pred):
    deadline = time.monotonic() + WAIT_S
    while True:
        doc = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if pred(doc):
            return doc


def test_a_listen_key_and_an_armed_stop_outlive_a_restart(make_settings):
    suffix = market_suffix("R")
    settings = make_settings()
    settings = settings.model_copy(
        update={"markets_file": unique_markets_file(settings.data_dir / "markets.json", suffix)}
    )
    symbol = f"BTC{suffix}USDT{suffix}"
    first_svc = build_services(settings)
    first = start_in_thread(create_app(settings, first_svc))
    owner = _account(first_svc, **{f"BTC{suffix}": "1"})
    maker = _account(first_svc, **{f"BTC{suffix}": "1", f"USDT{suffix}": "100000"})
    taker = _account(first_svc, **{f"BTC{suffix}": "1", f"USDT{suffix}": "100000"})
    _order(first.url, maker, symbol=symbol, side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.01",
           price="30000")  # fmt: skip
    _order(first.url, taker, symbol=symbol, side="BUY", type="MARKET", quantity="0.01")  # last price 30000
    listen = httpx.post(first.url + "/api/v3/userDataStream", headers={"X-MBX-APIKEY": owner[0]}, timeout=10)
    token = listen.json()["listenKey"]

    async def before() -> int:
        async with connect(f"{ws_url(first.url)}/ws/{token}", open_timeout=WAIT_S) as ws:
            stop = await asyncio.to_thread(
                _order, first.url, owner, symbol=symbol, side="SELL", type="STOP_LOSS", quantity="0.1",
                stopPrice="29000",
            )  # fmt: skip
            armed = await _until(ws, lambda d: d.get("e") == "executionReport" and d["i"] == stop["orderId"])
            assert armed["x"] == "NEW" and armed["w"] is False
            await asyncio.to_thread(first.stop)  # the server goes away with the stream open
            with pytest.raises(ConnectionClosed):  # the client learns it at once, not by a timeout
                await _until(ws, lambda d: False)  # (past the events still in flight)
            return int(stop["orderId"])

    stop_id = run(before())
    first_svc.close()

    again_svc = build_services(settings)
    again = start_in_thread(create_app(settings, again_svc))
    try:

        async def after() -> None:
            async with connect(f"{ws_url(again.url)}/ws/{token}", open_timeout=WAIT_S) as ws:
                await asyncio.to_thread(
                    _order, again.url, maker, symbol=symbol, side="BUY", type="LIMIT", timeInForce="GTC",
                    quantity="0.2", price="29000",
                )  # fmt: skip
                await asyncio.to_thread(_order, again.url, taker, symbol=symbol, side="SELL", type="MARKET",
                                        quantity="0.01")  # fmt: skip
                fired = await _until(ws, lambda d: d.get("e") == "executionReport" and d["i"] == stop_id
                                     and d["x"] == "TRADE")  # fmt: skip
                assert fired["X"] == "FILLED" and fired["L"] == "29000.00000000" and fired["z"] == "0.10000000"

        run(after())
        r = signed_request(
            "GET", again.url, "/api/v3/order", owner[0], owner[1], {"symbol": symbol, "orderId": stop_id}
        )
        assert r.json()["status"] == "FILLED" and r.json()["isWorking"] is False
        check_invariants(again_svc)
    finally:
        again.stop()
        clear_books(again_svc)
        again_svc.close()
