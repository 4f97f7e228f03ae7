"""The SDK against a real keyplane server: signing (HMAC and Ed25519), clock sync and resync, and one
exception class per rejection."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.client import errors as E
from keyplane.client.sdk import KeyplaneClient
from kptest.backends import db_scope
from kptest.clients import ed25519_keypair
from kptest.server import ThreadServer, start_in_thread


def client(url: str, key: Any, **kw: Any) -> KeyplaneClient:
    return KeyplaneClient(url, key.info.api_key, secret=key.secret, **kw)


def test_hmac_and_ed25519_signing(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key(scopes=("read", "trade"))
    with client(server.url, key) as kp:
        r = kp.api_restrictions()
        assert r["enableReading"] and r["enableSpotAndMarginTrading"] and not r["enableWithdrawals"]
        assert "balances" in kp.account()
        assert key.info.api_key not in repr(kp) and key.secret not in repr(kp)
    priv, pub = ed25519_keypair()
    ed = make_key(key_type="ed25519", public_key=pub)
    with KeyplaneClient(server.url, ed.info.api_key, private_key_pem=priv) as kp:
        assert kp.api_restrictions()["keyType"] == "ed25519"


def test_clock_sync_and_resync_after_a_timestamp_error(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key()
    skew = 30.0  # the local clock runs 30 s fast
    with client(server.url, key, clock=lambda: time.time() + skew) as kp:
        offset = kp.sync_clock()
        assert -31_000 < offset < -29_000
        kp.account()
        kp.offset_ms = 120_000.0  # a stale offset: the first try is rejected, then resynced
        kp.account()
        assert kp.offset_ms is not None and -31_000 < kp.offset_ms < -29_000


def test_bad_signature(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key()
    with (
        KeyplaneClient(server.url, key.info.api_key, secret="kps_wrong" + "x" * 30) as kp,
        pytest.raises(E.BadSignature) as e,
    ):
        kp.account()
    assert e.value.reason == "signature_invalid"
    assert key.secret not in str(e.value)


def test_unknown_key(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key()
    services_key = key.info.api_key
    with KeyplaneClient(server.url, services_key[:-6] + "AAAAAA", secret=key.secret) as kp, pytest.raises(E.InvalidKey):
        kp.account()


def test_disallowed_ip(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key(ips=["10.9.8.7/32"])
    with client(server.url, key) as kp, pytest.raises(E.IpNotAllowed) as e:
        kp.account()
    assert e.value.reason == "ip_not_allowed"


def test_missing_scope(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key(scopes=("read",))
    with client(server.url, key) as kp, pytest.raises(E.PermissionDenied) as e:
        kp.request(
            "POST",
            "/api/v3/order",
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "0.001",
                "price": "1000",
                "timeInForce": "GTC",
            },
        )
    assert e.value.reason == "scope_missing"


def _refused_with(kp: KeyplaneClient, error: type[E.ApiError], timeout: float) -> None:
    """Poll until ``kp.account()`` raises ``error``; fail if it still succeeds after ``timeout`` s
    (any other error fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            kp.account()
        except error:
            return
        assert time.monotonic() < deadline, f"still accepted after {timeout} s; expected {error.__name__}"
        time.sleep(0.02)


def test_revoked_and_expired_keys(server: ThreadServer, services: Any, make_key: Callable[..., Any]) -> None:
    key = make_key()
    kp = client(server.url, key)
    kp.account()
    services.keys.revoke(key.info.api_key)
    _refused_with(kp, E.KeyRevoked, 5.0)
    lifetime = dt.timedelta(seconds=1.5)
    short = make_key(expires_at=dt.datetime.now(dt.UTC) + lifetime)
    over = time.monotonic() + lifetime.total_seconds()  # the key has expired by then
    kp2 = client(server.url, short)
    kp2.account()  # accepted (and cached by the server) before it expires
    _refused_with(kp2, E.KeyExpired, over - time.monotonic() + 5.0)
    kp.close()
    kp2.close()


@pytest.fixture(scope=db_scope("module"))
def limited_server(make_settings: Callable[..., Any]) -> Iterator[tuple[ThreadServer, Any]]:
    from keyplane.api.app import create_app
    from keyplane.services import build_services

    settings = make_settings(rate_limit_per_key="3/minute")
    svc = build_services(settings)
    srv = start_in_thread(create_app(settings, svc))
    yield srv, svc
    srv.stop()
    svc.close()


def test_rate_limit_honours_retry_after(limited_server: tuple[ThreadServer, Any]) -> None:
    srv, svc = limited_server
    user = svc.accounts.create_user(f"rl{time.time_ns()}@example.com", "correct horse battery staple")
    key = svc.keys.create(user.id, scopes=("read",), step_up=StepUp.operator())
    waits: list[float] = []
    kp = client(srv.url, key, rate_limit_retries=1, max_wait_s=0.0, sleep=waits.append)
    for _ in range(3):
        kp.account()
    with pytest.raises(E.RateLimited) as e:
        kp.account()
    assert e.value.retry_after_s >= 1 and e.value.status == 429
    assert waits == []  # the wait (Retry-After) is longer than max_wait_s, so it is raised at once
    kp2 = client(srv.url, key, rate_limit_retries=2, max_wait_s=120.0, sleep=waits.append)
    with pytest.raises(E.RateLimited):
        kp2.account()
    assert len(waits) == 2 and all(w >= 1 for w in waits)  # slept Retry-After before each retry
    kp.close()
    kp2.close()


def test_unreachable_server() -> None:
    with (
        KeyplaneClient("http://127.0.0.1:9", "kp_live_x", secret="s", timeout=1) as kp,
        pytest.raises(E.ExchangeUnreachable),
    ):
        kp.server_time()


@pytest.mark.parametrize(
    ("reason", "status", "cls"),
    [
        ("signature_invalid", 401, E.BadSignature),
        ("key_revoked", 401, E.KeyRevoked),
        ("key_disabled", 401, E.KeyRevoked),
        ("key_expired", 401, E.KeyExpired),
        ("ip_not_allowed", 401, E.IpNotAllowed),
        ("scope_missing", 401, E.PermissionDenied),
        ("timestamp_outside_window", 400, E.ClockSkew),
        ("rate_limited", 429, E.RateLimited),
        ("service_unavailable", 503, E.ServerError),
        (None, 500, E.ServerError),
        (None, 418, E.RateLimited),
        (None, 404, E.BadRequest),
    ],
)
def test_every_reason_has_its_own_class(reason: str | None, status: int, cls: type[E.ApiError]) -> None:
    err = E.error_for(reason, "m", status=status, retry_after_s=7)
    assert type(err) is cls
    if isinstance(err, E.RateLimited):
        assert err.retry_after_s == 7


def test_native_key_self_is_signed_with_rfc9421(server: ThreadServer, make_key: Callable[..., Any]) -> None:
    key = make_key(scopes=("read", "trade"))
    with client(server.url, key) as kp:
        me = kp.key_self()
    assert (me["key_id"], me["key_type"], me["scopes"]) == (key.info.api_key, "hmac", ["read", "trade"])
    assert me["caller_ip"] == "127.0.0.1"
    priv, pub = ed25519_keypair()
    ed = make_key(key_type="ed25519", public_key=pub)
    with KeyplaneClient(server.url, ed.info.api_key, private_key_pem=priv) as kp:
        assert kp.key_self()["key_type"] == "ed25519"
    with (
        KeyplaneClient(server.url, key.info.api_key, secret="kps_wrong" + "x" * 30) as kp,
        pytest.raises(E.BadSignature),
    ):
        kp.key_self()
