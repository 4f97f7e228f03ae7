"""The ccxt factories send nothing, and no key, anywhere but the keyplane server they were given.

Built offline: constructing a ccxt instance makes no request, so every URL it would use can be read
and checked here, for the sync, async and pro classes, in normal, sandbox and demo modes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import pytest

from keyplane.client import ccxt_async_exchange, ccxt_exchange, ccxt_pro_exchange
from keyplane.client import ccxt_factory as factory
from keyplane.client.errors import ClientError
from keyplane.client.profile import Profile

BASE = "http://127.0.0.1:8000"
FACTORIES = [ccxt_exchange, ccxt_async_exchange, ccxt_pro_exchange]


def _urls(tree: Mapping[str, Any]) -> Iterator[str]:
    for value in tree.values():
        if isinstance(value, Mapping):
            yield from _urls(value)
        elif isinstance(value, str):
            yield value


def _close(ex: Any) -> None:
    if asyncio.iscoroutinefunction(getattr(ex, "close", None)):
        asyncio.run(ex.close())


@pytest.mark.parametrize("make", FACTORIES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("mode", ["live", "sandbox", "demo"])
def test_every_url_is_the_server_or_nowhere(make: Callable[..., Any], mode: str) -> None:
    ex = make(BASE, "kp_live_example", "secret")
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
        _close(ex)


def test_pro_streams_point_at_the_server() -> None:
    ex = ccxt_pro_exchange("https://kp.example.com:8443/", "kp_live_example", "secret")
    try:
        ws = ex.urls["api"]["ws"]
        assert ws["spot"] == "wss://kp.example.com:8443/ws"
        assert ws["ws-api"]["spot"] == "wss://kp.example.com:8443/ws-api/v3"
        assert ws["linear"].startswith("ws://keyplane.invalid/")  # futures: not served, and not Binance
        leaving = [u for u in _urls(ws) if urlsplit(u).hostname not in ("kp.example.com", "keyplane.invalid")]
        assert leaving == []
    finally:
        _close(ex)


def test_a_url_that_would_leave_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """If ccxt grew a URL map the factory does not rewrite, the check still catches it."""
    monkeypatch.setattr(factory, "_pointed", lambda template, base, prefix="": dict(template))
    for make in FACTORIES:
        with pytest.raises(ClientError, match="would send requests"):
            make(BASE, "kp_live_example", "secret")


@pytest.mark.parametrize("bad", ["127.0.0.1:8000", "ftp://host", "http://", ""])
def test_a_server_url_without_scheme_or_host_is_refused(bad: str) -> None:
    with pytest.raises(ClientError, match="http:// or https://"):
        ccxt_exchange(bad)


def test_other_exchanges_keep_their_own_class_in_each_form() -> None:
    profile = Profile(name="k", exchange="kraken")
    for make, module in ((ccxt_exchange, "ccxt.kraken"), (ccxt_async_exchange, "ccxt.async_support.kraken")):
        ex = make(profile)
        try:
            assert type(ex).__module__ == module
        finally:
            _close(ex)
    with pytest.raises(ClientError, match="unknown exchange"):
        ccxt_pro_exchange(Profile(name="x", exchange="no-such-exchange"))
