"""One address cannot open WebSockets without bound: each connection (market streams or the
WebSocket API) weighs 2 in the address's public request budget, and one past it is accepted and
closed at once saying why. The futures and options stubs count against the same budget."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from kptest.exchange import ExchangeServer, exchange_server
from kptest.streams import run, ws_url


@pytest.fixture
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(rate_limit_public_per_ip="7/minute")) as srv:
        yield srv


async def _closed_at_once(url: str) -> tuple[int | None, str]:
    async with connect(url, open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        return ws.close_code, ws.close_reason or ""


def test_connections_past_the_budget_are_closed_saying_why(xs: ExchangeServer) -> None:
    base = ws_url(xs.url)

    async def body() -> None:
        opened = [await connect(f"{base}/ws/btcusdt@trade", open_timeout=5), await connect(f"{base}/ws-api/v3")]
        opened.append(await connect(f"{base}/stream?streams=btcusdt@depth", open_timeout=5))  # weight 6 of 7
        for url in (f"{base}/ws/btcusdt@trade", f"{base}/ws-api/v3"):
            code, reason = await _closed_at_once(url)
            assert code == 1008 and "Too much request weight used from this IP" in reason, (code, reason)
        # The connections inside the budget stay open; a request on one is weighed in the same budget.
        api = opened[1]
        await api.send('{"id": 1, "method": "ping", "params": {}}')
        answer = await asyncio.wait_for(api.recv(), 5)
        assert '"status":429' in answer and "from this IP" in answer, answer
        for ws in opened:
            assert ws.close_code is None
            await ws.close()

    run(body())
    # REST's public routes, the futures stubs included, share the budget: it is spent.
    for path in ("/api/v3/ping", "/fapi/v1/exchangeInfo"):
        r = httpx.get(xs.url + path, timeout=5)
        assert r.status_code == 429 and r.json()["code"] == -1003, (path, r.text)
