"""Attacks through the console's JSON API: a second account reaching the first one's keys,
sessions, withdrawals, orders and audit (IDOR); expired keys brought back; disabled keys widened
without a code; sessions that outlive revoke-all or a 2FA change."""

from __future__ import annotations

import datetime as dt
import secrets

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.errors import KeyplaneError
from kptest.backends import db_scope
from kptest.clients import signed_get
from kptest.console import ConsoleClient

DRIFT = 10  # codes from up to 10 steps ahead: a test needs no wait for a fresh code


@pytest.fixture(scope=db_scope("module"))
def own(make_settings):
    from kptest.native import own_server

    with own_server(make_settings, totp_drift_steps=DRIFT) as pair:
        yield pair


@pytest.fixture
def server(own):
    return own[0]


@pytest.fixture
def services(own):
    return own[1]


@pytest.fixture
def alice(server):
    c = ConsoleClient(server.url, drift=DRIFT).ready()
    yield c
    c.close()


@pytest.fixture
def mallory(server):
    c = ConsoleClient(server.url, drift=DRIFT).ready()
    yield c
    c.close()


def _any_code(c: ConsoleClient) -> str:
    """A well-formed current code that the test's clock does not count as spent (for requests
    that must be refused before any code is checked)."""
    assert c.clock is not None
    return str(c.clock.totp.now())


def _uid(c: ConsoleClient) -> int:
    return int(c.api("GET", "/v1/account/session").json()["user"]["id"])


def _no_access(r: httpx.Response) -> None:
    assert r.status_code in (307, 308, 400, 403, 404, 409, 422), r.text
    assert "kps_" not in r.text


def test_another_account_cannot_reach_my_keys(server, services, alice, mallory):
    k = alice.create_key(label="alice", scopes=["read", "trade", "withdraw"], ips=["127.0.0.1"])
    assert k.status_code == 201, k.text
    key = k.json()["api_key"]
    before = services.keys.get(key)
    paths = [
        ("GET", f"/v1/account/keys/{key}", None),
        ("PATCH", f"/v1/account/keys/{key}", {"label": "pwned"}),
        ("PATCH", f"/v1/account/keys/{key}", {"scopes": ["read"], "totp": mallory.code()}),
        ("POST", f"/v1/account/keys/{key}/rotate", {"grace": "0", "totp": mallory.code()}),
        ("POST", f"/v1/account/keys/{key}/disable", {}),
        ("POST", f"/v1/account/keys/{key}/enable", {"totp": mallory.code()}),
        ("POST", f"/v1/account/keys/{key}/revoke", {}),
        ("PATCH", f"/v1/account/keys/{key.lower()}", {"label": "pwned"}),
        ("PATCH", f"/v1/account/keys/{key}%20", {"label": "pwned"}),
        ("PATCH", f"/v1/account/keys/{key}/", {"label": "pwned"}),
    ]
    for method, path, body in paths:
        _no_access(mallory.api(method, path, body))
    assert key not in mallory.api("GET", "/v1/account/keys").text
    events = mallory.api("GET", f"/v1/account/activity?api_key={key}").json()["events"]
    assert events == [], events
    assert key not in mallory.api("GET", "/v1/account/activity?limit=500").text
    # Console pages too.
    for path in (f"/keys/{key}", f"/keys/{key}/revoke"):
        r = mallory.http.get(path)
        assert key not in r.text or r.status_code in (404,), (path, r.status_code)
    r = mallory.http.get(f"/activity?key={key}")  # the page echoes the filter, and shows nothing
    assert "No events yet" in r.text and "alice" not in r.text, r.text[-500:]
    after = services.keys.get(key)
    assert (after.status, after.label, after.scopes, after.rotated_at) == (
        before.status, before.label, before.scopes, before.rotated_at
    )  # fmt: skip
    # Mallory's revoke-all revokes Mallory's keys only.
    r = mallory.api("POST", "/v1/account/keys/revoke-all", {"confirm": True, "totp": mallory.code()})
    assert r.status_code == 200 and key not in r.text
    assert services.keys.get(key).status == "active"


def test_another_accounts_key_cannot_read_or_cancel_my_orders(server, services, alice, mallory):
    a_uid, m_uid = _uid(alice), _uid(mallory)
    ka = services.keys.create(
        a_uid,
        scopes=("read", "trade"),
        restrictions=services.keys.build_restrictions(ips=["127.0.0.1"]),
        step_up=StepUp.operator(),
    )
    km = services.keys.create(
        m_uid,
        scopes=("read", "trade"),
        restrictions=services.keys.build_restrictions(ips=["127.0.0.1"]),
        step_up=StepUp.operator(),
    )
    for path in ("/api/v3/openOrders", "/api/v3/allOrders", "/sapi/v1/capital/withdraw/history", "/api/v3/account"):
        r = signed_get(server.url, path, km.info.api_key, km.secret, {"symbol": "BTCUSDT"} if "Orders" in path else {})
        assert ka.info.api_key not in r.text
    # Alice's key id in Mallory's header with Mallory's secret never verifies.
    r = signed_get(server.url, "/api/v3/account", ka.info.api_key, km.secret)
    assert r.status_code == 401 and r.json()["reason"] == "signature_invalid", r.text


def _expired_keys(services, uid: int) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(days=services.settings.idle_expiry_days + 5)
    idle = services.keys.create(
        uid, scopes=("read", "trade"), now=long_ago, step_up=StepUp.operator()
    )  # unbound trading key, idle
    broad = services.keys.create(
        uid,
        scopes=("read", "trade"),
        restrictions=services.keys.build_restrictions(ips=["0.0.0.0/0"]),
        now=long_ago,
        step_up=StepUp.operator(),
    )
    dated = services.keys.create(
        uid,
        scopes=("read",),
        restrictions=services.keys.build_restrictions(ips=["127.0.0.1"], expires_at=now - dt.timedelta(days=1)),
        now=now - dt.timedelta(days=2),
        step_up=StepUp.operator(),
    )
    return {"idle": idle.info.api_key, "broad": broad.info.api_key, "dated": dated.info.api_key}


def test_an_expired_key_is_never_revived_from_the_console(server, services, alice):
    uid = _uid(alice)
    keys = _expired_keys(services, uid)
    attempts = [
        ("PATCH", "", {"ips": ["127.0.0.1"]}),  # narrowing that would lift the idle expiry
        ("PATCH", "", {"ips": ["127.0.0.1/32", "::1/128"]}),
        ("PATCH", "", {"scopes": ["read"]}),  # narrowing that would end idle expiry (no trade)
        ("PATCH", "", {"scopes": ["read"], "ips": ["127.0.0.1"], "totp": "CODE"}),
        ("PATCH", "", {"expires_at": "30d", "totp": "CODE"}),
        ("PATCH", "", {"expires_at": None, "totp": "CODE"}),
        ("PATCH", "", {"label": "still here"}),
        ("POST", "/rotate", {"grace": "0", "totp": "CODE"}),
        ("POST", "/disable", {}),
        ("POST", "/enable", {"totp": "CODE"}),
    ]
    for kind, key in keys.items():
        for method, suffix, template in attempts:
            body = {k: (_any_code(alice) if v == "CODE" else v) for k, v in template.items()}
            r = alice.api(method, f"/v1/account/keys/{key}{suffix}", body)
            if suffix == "/disable":
                assert r.status_code in (200, 409), r.text
                continue
            assert r.status_code == 409, (kind, method, suffix, body, r.text)
        info = services.keys.get(key)
        assert info.effective_status in ("expired", "disabled"), (kind, info)
        assert info.expires_at is not None and info.expires_at <= dt.datetime.now(dt.UTC), (kind, info)
    # The admin path (operator, no 2FA) is held to the same rule.
    from keyplane.keys.errors import KeyStateError

    for key in keys.values():
        with pytest.raises(KeyStateError):
            services.keys.update(key, ips=["127.0.0.1"], step_up=StepUp.operator())
        with pytest.raises(KeyStateError):
            services.keys.enable(key, step_up=StepUp.operator())
        with pytest.raises(KeyStateError):
            services.keys.rotate(key, grace=dt.timedelta(0), step_up=StepUp.operator())


def test_a_disabled_key_is_not_widened_without_a_code(server, services, alice):
    k = alice.create_key(label="d", scopes=["read"], ips=["127.0.0.1"], max_notional="100")
    assert k.status_code == 201, k.text
    key = k.json()["api_key"]
    assert alice.api("POST", f"/v1/account/keys/{key}/disable", {}).status_code == 200
    for body in (
        {"scopes": ["read", "trade"]},
        {"ips": ["127.0.0.1", "127.0.0.2"]},
        {"ips": []},
        {"ips": ["127.0.0.0/24"]},
        {"max_notional": None},
        {"max_notional": "1000"},
        {"scopes": ["read", "trade"], "totp": ""},
        {"scopes": ["read", "trade"], "totp": "000000"},
        {"scopes": ["read", "trade"], "totp": "١٢٣٤٥٦"},
    ):
        r = alice.api("PATCH", f"/v1/account/keys/{key}", body)
        assert r.status_code in (400, 401, 403, 422, 429), (body, r.text)
    for body in ({}, {"totp": ""}, {"totp": "000000"}):
        r = alice.api("POST", f"/v1/account/keys/{key}/enable", body)
        assert r.status_code in (400, 401, 403, 422, 429), (body, r.text)
    info = services.keys.get(key)
    assert info.status == "disabled" and {s.value for s in info.scopes} == {"read"}
    assert [str(n) for n in info.restrictions.ip_allowlist] == ["127.0.0.1/32"]


def test_revoke_all_and_2fa_changes_end_every_other_session(server, services, alice):
    other = ConsoleClient(server.url, drift=DRIFT)
    other.email, other.password, other.clock = alice.email, alice.password, alice.clock
    third = ConsoleClient(server.url, drift=DRIFT)
    third.email, third.password, third.clock = alice.email, alice.password, alice.clock
    try:
        assert other.login().status_code == 200
        # A session stuck at the password stage (2FA not passed yet) must end too.
        token = third.http.get("/v1/account/csrf").json()["csrf_token"]
        r = third.http.post("/v1/account/login", json={"email": alice.email, "password": alice.password},
                            headers={"X-CSRF-Token": token})  # fmt: skip
        assert r.status_code == 200 and r.json()["needs_totp"]
        third.csrf = r.json()["csrf_token"]
        assert other.api("GET", "/v1/account/session").status_code == 200
        r = alice.api("POST", "/v1/account/recovery-codes", {"totp": alice.code()})
        assert r.status_code == 200, r.text
        assert other.api("GET", "/v1/account/session").status_code == 401
        assert third.api("POST", "/v1/account/login/totp", {"totp": alice.code()}).status_code == 401
        assert alice.api("GET", "/v1/account/session").status_code == 200

        assert other.login().status_code == 200
        r = alice.api("POST", "/v1/account/keys/revoke-all", {"confirm": True, "totp": alice.code()})
        assert r.status_code == 200, r.text
        assert other.api("GET", "/v1/account/session").status_code == 401
        assert other.http.get("/keys").status_code in (302, 303, 401)
        assert alice.api("GET", "/v1/account/session").status_code == 200
    finally:
        other.close()
        third.close()


def test_ended_and_expired_sessions_are_purged(services):
    from sqlalchemy import func, select

    from keyplane.accounts.models import AccountSession

    u = services.accounts.create_user(f"purge-{secrets.token_hex(4)}@example.com", "a long enough password")
    s = services.identity.sessions
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    old = [s.create(u.id, stage="full", ip="127.0.0.1", now=long_ago) for _ in range(3)]
    s.create(u.id, stage="full", ip="127.0.0.1")  # a new log-in purges the account's ended sessions
    with services.db.read() as db:
        n = db.execute(select(func.count()).select_from(AccountSession).where(AccountSession.user_id == u.id)).scalar()
    assert n == 1, f"{n - 1} ended session rows of the account are still stored"
    for token in old:
        with pytest.raises(KeyplaneError):
            s.load(token)
