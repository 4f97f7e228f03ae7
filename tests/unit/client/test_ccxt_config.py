"""``ccxt_config``: the config a program builds its own ccxt ``binance`` instances from (freqtrade's
``ccxt_config`` / ``ccxt_async_config``). It is plain JSON, holds no key, and every instance built
from it, sync, async or pro, in live, sandbox or demo mode, sends nothing anywhere but the server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

from keyplane.client import ccxt_config
from keyplane.client import ccxt_factory as factory
from keyplane.client.errors import ClientError

BASE = "http://127.0.0.1:8000"


def _urls(tree: Mapping[str, Any]) -> Iterator[str]:
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _urls(value)
        elif isinstance(value, str):
            yield value


def test_plain_json_without_a_key() -> None:
    config = ccxt_config(BASE, recvWindow=10000)
    assert json.loads(json.dumps(config)) == config
    assert set(config) == {"urls", "options"}
    assert config["options"]["recvWindow"] == 10000 and config["options"]["fetchCurrencies"] is False
    assert config["urls"]["api"]["ws"]["spot"] == "ws://127.0.0.1:8000/ws"


@pytest.mark.parametrize("cls", [ccxt.binance, ccxt.async_support.binance, ccxt.pro.binance], ids=str)
@pytest.mark.parametrize("mode", ["live", "sandbox", "demo"])
def test_every_form_built_from_it_stays_on_the_server(cls: type, mode: str) -> None:
    ex = cls({**ccxt_config(BASE), "apiKey": "kp_live_example", "secret": "secret"})
    try:
        if mode == "sandbox":
            ex.set_sandbox_mode(True)
        elif mode == "demo":
            ex.enable_demo_trading(True)
        hosts = {urlsplit(u).hostname for part in ("api", "test", "demo") for u in _urls(ex.urls.get(part) or {})}
        assert hosts <= {"127.0.0.1", "keyplane.invalid"}
        assert ex.urls["api"]["public"] == BASE + "/api/v3"
        assert ex.urls["api"]["sapi"] == BASE + "/sapi/v1"
    finally:
        if asyncio.iscoroutinefunction(getattr(ex, "close", None)):
            asyncio.run(ex.close())


def test_a_url_that_would_leave_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "_pointed", lambda template, base, prefix="": dict(template))
    with pytest.raises(ClientError, match="would send requests"):
        ccxt_config(BASE)


@pytest.mark.parametrize("bad", ["127.0.0.1:8000", "ftp://host", "http://", ""])
def test_a_server_url_without_scheme_or_host_is_refused(bad: str) -> None:
    with pytest.raises(ClientError, match="http:// or https://"):
        ccxt_config(bad)
