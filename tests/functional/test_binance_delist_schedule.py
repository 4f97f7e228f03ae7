"""``GET /sapi/v1/spot/delist-schedule``, which trading bots read before they trade (freqtrade's
DelistFilter on Binance spot stops with an error on a 404): Binance's shape, a list of
``{"delistTime", "symbols"}``, empty on keyplane, whether ccxt signs the call or a client sends
it bare."""

from __future__ import annotations

import httpx

from keyplane.client import ccxt_exchange
from kptest.server import ThreadServer


def test_ccxt_reads_an_empty_schedule_with_a_signed_call(server: ThreadServer, make_key) -> None:
    issued = make_key(scopes=("read",))
    ex = ccxt_exchange(server.url, issued.info.api_key, issued.secret)
    assert ex.sapi_get_spot_delist_schedule() == []


def test_a_bare_request_gets_the_same_answer(server: ThreadServer) -> None:
    r = httpx.get(server.url + "/sapi/v1/spot/delist-schedule", timeout=10)
    assert r.status_code == 200
    assert r.json() == []
