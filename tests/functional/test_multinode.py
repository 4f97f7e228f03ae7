"""Two ``keyplane serve`` processes on one PostgreSQL and one Redis.

A key revoked, disabled or rotated through node A's console is refused by node B within 1 s (the
Redis broadcast; the database poller is slowed to 5 s here so it cannot be what answers). Limits
and the replay guard are shared by both nodes. With node B's subscription killed, the database
poller still bounds revocation (the documented fallback).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from keyplane.accounts.stepup import StepUp
from keyplane.auth.broadcast import subscriber_name
from keyplane.client.httpsig import sign_request
from keyplane.settings import Settings
from kptest.clients import signed_get
from kptest.console import ConsoleClient
from kptest.native import unique_prefix
from kptest.server import ProcessServer, start_process

BASE_ENV = {
    "KEYPLANE_RATE_LIMIT_PER_KEY": "12/minute",
    "KEYPLANE_LOCKOUT_FAILURES": "1000",
    "KEYPLANE_RATE_LIMIT_PER_IP": "100000/minute",
    "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "100000/minute",
}


def _nodes(
    tmp_path: Path, settings: Settings, master_keys: str, **extra: str
) -> tuple[ProcessServer, ProcessServer, str]:
    """Two nodes on ``settings``' database (this test's, the one ``services`` and ``make_key`` use)."""
    if settings.database_url is None or settings.redis_url is None:
        pytest.skip("several nodes need the postgres backend (PostgreSQL + Redis)")
    prefix = unique_prefix()
    env = {
        **BASE_ENV,
        "KEYPLANE_DATABASE_URL": settings.database_url,
        "KEYPLANE_REDIS_URL": settings.redis_url,
        "KEYPLANE_REDIS_PREFIX": prefix,
        "KEYPLANE_MASTER_KEYS": master_keys,
        **extra,
    }
    a = start_process({**env, "KEYPLANE_DATA_DIR": str(tmp_path / "a")}, tmp_path / "a.log")
    try:
        b = start_process({**env, "KEYPLANE_DATA_DIR": str(tmp_path / "b")}, tmp_path / "b.log")
    except Exception:
        a.stop()
        raise
    return a, b, prefix


@pytest.fixture
def two_nodes(tmp_path: Path, settings: Settings, master_keys: str) -> Iterator[tuple[ProcessServer, ProcessServer]]:
    # A slow poller and a lax staleness bound: a fast rejection on B is the broadcast's doing.
    a, b, _ = _nodes(
        tmp_path, settings, master_keys, KEYPLANE_KEY_CACHE_POLL_S="5", KEYPLANE_KEY_CACHE_MAX_STALENESS_S="30"
    )
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def _first_rejection(node: ProcessServer, key: str, secret: str, limit_s: float) -> tuple[float, str]:
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        resp = signed_get(node.url, "/sapi/v1/account/apiRestrictions", key, secret)
        if resp.status_code == 401:
            return time.monotonic() - start, resp.json()["reason"]
        assert resp.status_code == 200, resp.text
        time.sleep(0.005)
    return float("inf"), ""


@pytest.mark.parametrize(
    ("change", "reason"), [("revoke", "key_revoked"), ("disable", "key_disabled"), ("rotate", "signature_invalid")]
)
def test_a_change_through_node_a_is_refused_by_node_b_within_1s(two_nodes, services, change, reason):
    a, b = two_nodes
    console = ConsoleClient(a.url).ready()
    try:
        user_id = services.keys.user_id_for_email(console.email)
        issued = services.keys.create(user_id, step_up=StepUp.operator())
        key, secret = issued.info.api_key, issued.secret
        for node in (a, b):  # both nodes now hold the key in their caches
            assert signed_get(node.url, "/sapi/v1/account/apiRestrictions", key, secret).status_code == 200
        if change == "rotate":
            resp = console.api("POST", f"/v1/account/keys/{key}/rotate", {"grace": "0", "totp": console.code()})
        else:
            resp = console.api("POST", f"/v1/account/keys/{key}/{change}")
        assert resp.status_code == 200, resp.text
        took, got = _first_rejection(b, key, secret, 1.0)
        assert took < 1.0, f"node B still accepted the key 1 s after the {change} on node A"
        assert got == reason
    finally:
        console.close()


def test_limits_and_replay_are_shared_by_both_nodes(two_nodes, make_key):
    a, b = two_nodes
    k = make_key()
    # The per-key limit (12/minute) counts requests on both nodes together.
    statuses = [signed_get(n.url, "/api/v3/account", k.info.api_key, k.secret).status_code for n in (a, b) * 7]
    assert statuses.count(200) == 12 and statuses[-2:] == [429, 429]
    # A nonce used on node A is refused on node B.
    other = make_key()
    url_a, url_b = a.url + "/v1/keys/self", b.url + "/v1/keys/self"
    headers = sign_request("GET", url_a, {}, key_id=other.info.api_key, secret=other.secret)
    assert httpx.get(url_a, headers=headers).status_code == 200
    replay = httpx.get(url_b, headers=headers)
    assert replay.status_code == 401 and replay.json()["error"] == "nonce_reused"


def test_without_the_broadcast_the_poller_still_bounds_revocation(tmp_path, settings, master_keys, services):
    """Kill node B's pub/sub connection: B falls back to the database poller (0.25 s by default)."""
    a, b, prefix = _nodes(tmp_path, settings, master_keys, KEYPLANE_KEY_CACHE_POLL_S="0.25")
    try:
        console = ConsoleClient(a.url).ready()
        user_id = services.keys.user_id_for_email(console.email)
        issued = services.keys.create(user_id, step_up=StepUp.operator())
        key, secret = issued.info.api_key, issued.secret
        assert signed_get(b.url, "/api/v3/account", key, secret).status_code == 200
        r = redis.Redis.from_url(settings.redis_url or "")
        name = subscriber_name(Settings(redis_prefix=prefix))
        ours = [c for c in r.client_list() if c.get("name") == name]
        assert len(ours) == 2  # one subscription per node
        for c in ours:
            r.client_kill_filter(_id=c["id"])
        assert console.api("POST", f"/v1/account/keys/{key}/revoke").status_code == 200
        took, got = _first_rejection(b, key, secret, 1.0)
        assert took < 1.0 and got == "key_revoked"
        console.close()
    finally:
        a.stop()
        b.stop()
