"""/v1/account over real HTTP against a real server and database: sign-up, 2FA, login, keys, and
every refusal the API promises."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator

import ccxt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from keyplane.accounts.models import AccountSession
from keyplane.accounts.stepup import StepUp
from keyplane.api.app import create_app
from keyplane.keys.models import ApiKey
from keyplane.services import Services, build_services
from kptest.backends import db_scope
from kptest.clients import ccxt_binance, ed25519_keypair, hmac_sign, now_ms, signed_get
from kptest.console import ConsoleClient, new_email, rewind_in
from kptest.server import ThreadServer, start_in_thread

DRIFT = 10  # lets one test spend several fresh codes without waiting for the clock


@pytest.fixture(scope=db_scope("module"))
def acct(make_settings) -> Iterator[tuple[ThreadServer, Services]]:
    settings = make_settings(totp_drift_steps=DRIFT)
    services = build_services(settings)
    srv = start_in_thread(create_app(settings, services))
    yield srv, services
    srv.stop()
    services.close()


@pytest.fixture
def client(acct) -> Iterator[ConsoleClient]:
    c = ConsoleClient(acct[0].url, drift=DRIFT, rewind=rewind_in(acct[1]))
    yield c
    c.close()


@pytest.fixture(autouse=True)
def no_server_tracebacks(caplog) -> Iterator[None]:
    """Every refusal is a clean error: nothing logged at ERROR, no traceback."""
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def key_count(services: Services, user_id: int) -> int:
    with services.db.read() as s:
        return int(s.execute(select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id)).scalar_one())


def user_id(client: ConsoleClient) -> int:
    return int(client.api("GET", "/v1/account/session").json()["user"]["id"])


# -- sign-up and passwords -------------------------------------------------------------------------


def test_signup_logs_in_and_hashes_password(client, acct):
    r = client.signup()
    assert r.status_code == 201
    assert r.json()["user"]["email"] == client.email
    cookie = r.headers["set-cookie"]
    assert "kp_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    me = client.api("GET", "/v1/account/session").json()
    assert me["two_factor"] is False
    info = acct[1].accounts.password_hash_for(client.email)
    assert info is not None and info[1].startswith("$argon2id$")


@pytest.mark.parametrize(
    ("email", "password", "code", "field"),
    [
        ("not-an-email", "orbit-lantern-meadow-42", "invalid_email", "email"),
        (None, "short", "weak_password", "password"),
        (None, "password123456", "weak_password", "password"),
        (None, "Qwertyuiop123", "weak_password", "password"),
    ],
)
def test_signup_rejects_bad_input(client, email, password, code, field):
    r = client.signup(email or new_email(), password)
    assert r.status_code == 400
    assert r.json()["error"] == code
    assert r.json()["field"] == field


def test_duplicate_email_is_refused(client, acct):
    assert client.signup().status_code == 201
    other = ConsoleClient(acct[0].url)
    try:
        r = other.signup(client.email.upper())
    finally:
        other.close()
    assert r.status_code == 409
    assert r.json() == {"error": "email_taken", "message": r.json()["message"], "field": "email"}


def test_signup_and_login_need_the_csrf_token(acct):
    c = ConsoleClient(acct[0].url)
    try:
        r = c.http.post("/v1/account/signup", json={"email": new_email(), "password": "orbit-lantern-meadow-42"})
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
        c.http.get("/v1/account/csrf")
        r = c.http.post(
            "/v1/account/login",
            json={"email": "x@example.com", "password": "y"},
            headers={"X-CSRF-Token": "not-the-cookie-value-at-all"},
        )
        assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
    finally:
        c.close()


def test_state_changing_calls_need_the_session_csrf_token(client):
    client.signup()
    r = client.http.post("/v1/account/totp/enrol")
    assert r.status_code == 403 and r.json()["error"] == "csrf_failed"
    r = client.http.post("/v1/account/totp/enrol", headers={"X-CSRF-Token": "x" * 43})
    assert r.status_code == 403
    assert client.api("POST", "/v1/account/totp/enrol").status_code == 200


# -- login and 2FA ---------------------------------------------------------------------------------


def test_wrong_password_is_refused_with_one_message(client):
    client.signup()
    r = client.login(password="wrong-password-here")
    assert r.status_code == 401
    assert r.json()["error"] == "invalid_credentials" and r.json()["field"] == "password"
    client.email = new_email()  # no such account: same answer
    r2 = client.login(password="wrong-password-here")
    assert r2.status_code == 401 and r2.json()["message"] == r.json()["message"]


def test_totp_enrolment_login_and_replay(client, acct):
    client.signup()
    r = client.api("POST", "/v1/account/totp/enrol")
    body = r.json()
    assert body["uri"].startswith("otpauth://totp/")
    assert body["qr_svg"].startswith("<svg") and "<path" in body["qr_svg"]
    from kptest.console import TotpClock

    client.clock = TotpClock(body["secret"], DRIFT)
    first = client.code()
    codes = client.api("POST", "/v1/account/totp/confirm", {"totp": first}).json()["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    # The secret is encrypted at rest.
    from keyplane.accounts.models import RecoveryCode, TotpCredential

    with acct[1].db.read() as s:
        row = s.get(TotpCredential, user_id(client))
        assert row is not None and body["secret"] not in row.secret_ciphertext
        hashes = list(s.execute(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == row.user_id)).scalars())
    assert len(hashes) == 10 and not set(codes) & set(hashes)

    # Log in again: the password alone is not enough.
    client.http.cookies.clear()
    token = client.http.get("/v1/account/csrf").json()["csrf_token"]
    r = client.http.post(
        "/v1/account/login",
        json={"email": client.email, "password": client.password},
        headers={"X-CSRF-Token": token},
    )
    assert r.json()["needs_totp"] is True
    client.csrf = r.json()["csrf_token"]
    assert client.api("GET", "/v1/account/keys").status_code == 401
    # The code used for enrolment cannot be replayed.
    r = client.api("POST", "/v1/account/login/totp", {"totp": first})
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid" and r.json()["field"] == "totp"
    assert "already used" in r.json()["message"]
    r = client.api("POST", "/v1/account/login/totp", {"totp": "000000"})
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid"
    good = client.code()
    r = client.api("POST", "/v1/account/login/totp", {"totp": good})
    assert r.status_code == 200
    client.csrf = r.json()["csrf_token"]
    assert client.api("GET", "/v1/account/keys").status_code == 200


def test_recovery_code_logs_in_once(client):
    codes = client.ready().recovery_codes
    assert client.login(code=codes[0].upper()).status_code == 200
    assert client.api("GET", "/v1/account/session").json()["recovery_codes_left"] == 9
    r = client.login(code=codes[0])
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid"


# -- keys ------------------------------------------------------------------------------------------


def test_create_key_needs_2fa_and_a_fresh_code(client, acct):
    client.signup()
    r = client.api("POST", "/v1/account/keys", {"label": "x", "totp": "123456"})
    assert r.status_code == 403 and r.json()["error"] == "two_factor_required"
    client.enrol()
    uid = user_id(client)
    r = client.api("POST", "/v1/account/keys", {"label": "x"})
    assert r.status_code == 400 and r.json()["field"] == "totp"
    assert key_count(acct[1], uid) == 0
    r = client.create_key(label="bot")
    assert r.status_code == 201
    created = r.json()
    assert created["secret"].startswith("kps_") and created["scopes"] == ["read"]
    listed = client.api("GET", "/v1/account/keys").json()["keys"]
    assert [k["api_key"] for k in listed] == [created["api_key"]]
    assert "secret" not in listed[0]
    shown = client.api("GET", f"/v1/account/keys/{created['api_key']}").json()
    assert "secret" not in shown and shown["label"] == "bot"
    for field in ("ip_allowlist", "created_at", "expires_at", "last_used_at", "last_used_ip", "scopes"):
        assert field in shown

    # The key works from ccxt, and its use shows up as last-used time and IP.
    ex = ccxt_binance(acct[0].url, created["api_key"], created["secret"])
    assert ex.fetch_balance()["info"]["accountType"] == "SPOT"


def _rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"ips": ["10.0.0.0/33"]}, "invalid_restriction", "ips"),
        ({"ips": ["not-an-ip"]}, "invalid_restriction", "ips"),
        ({"ips": [f"10.0.{i}.0/24" for i in range(31)]}, "invalid_restriction", "ips"),
        ({"scopes": ["read", "admin"]}, "invalid_restriction", "scopes"),
        ({"scopes": ["read", "withdraw"]}, "withdraw_needs_ip_allowlist", "ips"),
        (
            {"type": "ed25519", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"},
            "invalid_public_key",
            "public_key",
        ),
        ({"type": "ed25519", "public_key": "rsa"}, "invalid_public_key", "public_key"),
        ({"expires_at": "2001-01-01"}, "invalid_restriction", "expires_at"),
        ({"type": "rsa"}, "invalid_restriction", "key_type"),
    ],
)
def test_bad_key_input_is_refused_and_leaves_no_key(client, acct, body, code, field):
    client.ready()
    if body.get("public_key") == "rsa":
        body = {**body, "public_key": _rsa_pem()}
    uid = user_id(client)
    r = client.create_key(**body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == code and r.json()["field"] == field
    assert key_count(acct[1], uid) == 0
    # The code was not spent on input that was wrong anyway: the same code still creates a key.
    assert client.api("POST", "/v1/account/keys", {"label": "ok", "totp": client.code()}).status_code == 201


def test_ed25519_key_from_uploaded_pem_works_with_ccxt(client, acct):
    client.ready()
    private_pem, public_pem = ed25519_keypair()
    r = client.create_key(type="ed25519", public_key=public_pem, scopes=["read", "trade"])
    assert r.status_code == 201 and r.json()["secret"] is None
    ex = ccxt_binance(acct[0].url, r.json()["api_key"], private_pem)
    assert ex.fetch_balance()["info"]["canTrade"] is True


def test_widening_needs_a_code_narrowing_does_not(client):
    client.ready()
    key = client.create_key(scopes=["read", "trade"], ips=["10.0.0.0/8"], max_notional="1000").json()["api_key"]
    path = f"/v1/account/keys/{key}"
    r = client.api("PATCH", path, {"ips": ["10.1.0.0/16"], "max_notional": "500", "scopes": ["read"]})
    assert r.status_code == 200, r.text
    assert r.json()["ip_allowlist"] == ["10.1.0.0/16"] and r.json()["scopes"] == ["read"]
    for widen in (
        {"scopes": ["read", "trade"]},
        {"ips": ["10.1.0.0/16", "192.168.0.1"]},
        {"ips": []},
        {"max_notional": "900"},
        {"expires_at": "30d"},
    ):
        r = client.api("PATCH", path, widen)
        if "expires_at" in widen:  # no expiry set: adding one narrows
            assert r.status_code == 200
            continue
        assert r.status_code == 403, widen
        assert r.json()["error"] == "step_up_required"
    r = client.api("PATCH", path, {"expires_at": "3000-01-01"})
    assert r.status_code == 403 and "extends expiry" in r.json()["message"]
    r = client.api("PATCH", path, {"scopes": ["read", "trade"], "totp": "000000"})
    assert r.status_code == 400 and r.json()["error"] == "totp_invalid"
    r = client.api("PATCH", path, {"scopes": ["read", "trade"], "totp": client.code()})
    assert r.status_code == 200 and r.json()["scopes"] == ["read", "trade"]


def test_rotate_disable_enable_revoke(client, acct):
    client.ready()
    created = client.create_key().json()
    key, old_secret = created["api_key"], created["secret"]
    r = client.api("POST", f"/v1/account/keys/{key}/rotate", {"grace": "1h"})
    assert r.status_code == 400 and r.json()["field"] == "totp"
    r = client.api("POST", f"/v1/account/keys/{key}/rotate", {"grace": "1h", "totp": client.code()})
    assert r.status_code == 200
    new_secret = r.json()["secret"]
    assert new_secret != old_secret and r.json()["previous_secret_valid_until"]
    for secret in (old_secret, new_secret):  # the old one works during the grace period
        assert ccxt_binance(acct[0].url, key, secret).fetch_balance()["info"]["accountType"] == "SPOT"

    assert client.api("POST", f"/v1/account/keys/{key}/disable").json()["status"] == "disabled"
    r = client.api("POST", f"/v1/account/keys/{key}/enable", {"totp": ""})
    assert r.status_code == 400 and r.json()["field"] == "totp"
    r = client.api("POST", f"/v1/account/keys/{key}/enable", {"totp": client.code()})
    assert r.json()["status"] == "active"
    assert client.api("POST", f"/v1/account/keys/{key}/revoke").json()["status"] == "revoked"
    with pytest.raises(ccxt.AuthenticationError):
        ccxt_binance(acct[0].url, key, new_secret).fetch_balance()


def test_revoke_all_needs_confirmation_and_a_code(client):
    client.ready()
    keys = [client.create_key(label=f"k{i}").json()["api_key"] for i in range(2)]
    r = client.api("POST", "/v1/account/keys/revoke-all", {"confirm": False, "totp": client.code()})
    assert r.status_code == 400 and r.json()["field"] == "confirm"
    r = client.api("POST", "/v1/account/keys/revoke-all", {"confirm": True})
    assert r.status_code == 400 and r.json()["field"] == "totp"
    r = client.api("POST", "/v1/account/keys/revoke-all", {"confirm": True, "totp": client.code()})
    assert sorted(r.json()["revoked"]) == sorted(keys)
    statuses = {k["status"] for k in client.api("GET", "/v1/account/keys").json()["keys"]}
    assert statuses == {"revoked"}


def test_other_accounts_keys_are_invisible(client, acct):
    client.ready()
    key = client.create_key().json()["api_key"]
    other = ConsoleClient(acct[0].url, drift=DRIFT).ready()
    try:
        assert other.api("GET", f"/v1/account/keys/{key}").status_code == 404
        assert other.api("POST", f"/v1/account/keys/{key}/revoke").status_code == 404
    finally:
        other.close()


def test_a_signed_api_key_cannot_manage_keys(client, acct):
    client.ready()
    svc = acct[1]
    issued = svc.keys.create(
        user_id(client),
        scopes=("read", "trade", "withdraw"),
        restrictions=svc.keys.build_restrictions(ips=["127.0.0.1"]),
        step_up=StepUp.operator(),
    )
    assert issued.secret is not None
    # The key itself is good: it signs a real request.
    assert signed_get(acct[0].url, "/api/v3/account", issued.info.api_key, issued.secret).status_code == 200
    payload = f"timestamp={now_ms()}"
    query = f"{payload}&signature={hmac_sign(issued.secret, payload)}"
    headers = {"X-MBX-APIKEY": issued.info.api_key}
    for method, path in (
        ("GET", "/v1/account/keys"),
        ("POST", "/v1/account/keys"),
        ("POST", "/v1/account/keys/revoke-all"),
    ):
        bare = httpx.request(method, f"{acct[0].url}{path}?{query}", headers=headers)
        assert bare.status_code in (401, 403)
        # Even riding on a live session, a signed request is refused.
        r = client.api(method, f"{path}?{query}", headers=headers)
        assert r.status_code == 403 and r.json()["error"] == "api_key_not_allowed"
    r = client.api(
        "GET", "/v1/account/keys", headers={"Signature-Input": 'sig1=("@method");keyid="x"', "Signature": "sig1=:AA==:"}
    )
    assert r.status_code == 403


def test_expired_session_is_refused(client, acct):
    client.signup()
    assert client.api("GET", "/v1/account/keys").status_code == 200
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with acct[1].db.transaction() as s:
        s.execute(
            AccountSession.__table__.update()
            .where(AccountSession.user_id == user_id_of(acct, client))
            .values(last_seen_at=old)
        )
    r = client.api("GET", "/v1/account/keys")
    assert r.status_code == 401 and r.json()["error"] == "session_expired"
    assert client.api("GET", "/v1/account/keys").json()["error"] == "login_required"  # and it is gone


def user_id_of(acct, client) -> int:
    info = acct[1].accounts.get_by_email(client.email)
    assert info is not None
    return info.id


def test_logout_ends_the_session(client):
    client.signup()
    assert client.api("POST", "/v1/account/logout").status_code == 204
    assert client.api("GET", "/v1/account/session").status_code == 401


def test_activity_lists_logins_key_changes_and_failures(client):
    client.ready()
    key = client.create_key(label="act").json()["api_key"]
    client.api("POST", f"/v1/account/keys/{key}/disable")
    client.login(password="not-the-password")
    client.login()
    types = [e["type"] for e in client.api("GET", "/v1/account/activity").json()["events"]]
    for t in (
        "account:user:created",
        "account:totp:enrolled",
        "key:api_key:created",
        "key:api_key:disabled",
        "account:login:failed",
        "account:login:succeeded",
    ):
        assert t in types
    only_key = client.api("GET", f"/v1/account/activity?api_key={key}").json()["events"]
    assert {e["api_key"] for e in only_key} == {key}


def test_activity_shows_failed_signed_requests_on_the_accounts_keys(client, acct):
    client.ready()
    key = client.create_key(label="probe").json()["api_key"]
    r = signed_get(acct[0].url, "/api/v3/account", key, "kps_" + "A" * 46)
    assert r.status_code in (400, 401)
    deadline = time.monotonic() + 15
    while True:
        events = client.api("GET", f"/v1/account/activity?api_key={key}").json()["events"]
        failed = [e for e in events if e["type"] == "auth:request:failed"]
        if failed:
            break
        assert time.monotonic() < deadline, f"no auth:request:failed event in the activity within 15 s: {events}"
        time.sleep(0.05)
    assert failed[0]["ip"] == "127.0.0.1"


def test_openapi_documents_the_account_api(acct):
    doc = httpx.get(acct[0].url + "/openapi.json").json()
    for path in (
        "/v1/account/keys",
        "/v1/account/keys/{api_key}",
        "/v1/account/keys/{api_key}/rotate",
        "/v1/account/keys/revoke-all",
        "/v1/account/login",
        "/v1/account/totp/enrol",
        "/v1/account/activity",
    ):
        assert path in doc["paths"]
    schemes = doc["components"]["securitySchemes"]
    assert {s["name"] for s in schemes.values()} >= {"kp_session", "X-CSRF-Token"}
    assert not [p for p in doc["paths"] if p.startswith("/v1/keys") and p != "/v1/keys/self"]


# -- expired keys, IP binding, sessions that must end ---------------------------------------------


def test_a_patch_does_not_revive_an_idle_expired_key(client, acct):
    """An idle-expired trade key stays expired: adding an allowlist (a narrowing for a live key)
    does not bring it back, with or without a code, and neither do enable or rotate. No code is
    spent on a refusal."""
    client.ready()
    created = client.create_key(scopes=["read", "trade"]).json()
    key, secret = created["api_key"], created["secret"]
    services = acct[1]
    idle = dt.timedelta(days=services.settings.idle_expiry_days, hours=1)
    with services.db.transaction() as s:
        s.execute(
            ApiKey.__table__.update()
            .where(ApiKey.public_id == key)
            .values(created_at=dt.datetime.now(dt.UTC) - idle, updated_at=dt.datetime.now(dt.UTC))
        )
    r = signed_get(acct[0].url, "/api/v3/account", key, secret)
    assert r.status_code == 401 and r.json()["reason"] == "key_expired"
    path = f"/v1/account/keys/{key}"
    for body in ({"ips": ["203.0.113.7"]}, {"ips": ["203.0.113.7"], "totp": "000000"}, {"label": "bot"}):
        r = client.api("PATCH", path, body)
        assert r.status_code == 409 and r.json()["error"] == "key_state", r.text
        assert "stays expired" in r.json()["message"]
    assert client.api("POST", f"{path}/enable", {"totp": "000000"}).status_code == 409
    assert client.api("POST", f"{path}/rotate", {"totp": "000000"}).status_code == 409
    after = client.api("GET", path).json()
    assert after["status"] == "expired" and after["ip_allowlist"] == []
    assert signed_get(acct[0].url, "/api/v3/account", key, secret).json()["reason"] == "key_expired"
    # The refusals above spent no code and counted no failure: a fresh code still works.
    assert client.create_key().status_code == 201


def test_withdraw_with_a_whole_internet_allowlist_is_refused(client, acct):
    client.ready()
    before = key_count(acct[1], user_id(client))
    r = client.create_key(scopes=["read", "withdraw"], ips=["0.0.0.0/0", "::/0"])
    assert r.status_code == 400 and r.json()["error"] == "withdraw_needs_ip_allowlist"
    assert r.json()["field"] == "ips" and "0.0.0.0/0, ::/0 are broader than /24 (IPv4) or /48 (IPv6)" in r.text
    assert key_count(acct[1], user_id(client)) == before
    r = client.create_key(scopes=["read", "trade"], ips=["0.0.0.0/0", "::/0"])
    assert r.status_code == 201 and r.json()["idle_expiry"] is True and r.json()["expires_at"]


def _second_session(client: ConsoleClient, acct) -> ConsoleClient:
    other = ConsoleClient(acct[0].url, drift=DRIFT)
    other.email, other.clock = client.email, client.clock  # one authenticator, two browsers
    assert other.login().status_code == 200
    assert other.api("GET", "/v1/account/session").status_code == 200
    return other


def test_revoke_all_and_2fa_changes_end_the_other_sessions(client, acct):
    client.ready()
    for change in (
        ("POST", "/v1/account/recovery-codes", lambda: {"totp": client.code()}),
        ("POST", "/v1/account/keys/revoke-all", lambda: {"confirm": True, "totp": client.code()}),
    ):
        other = _second_session(client, acct)
        try:
            method, path, body = change
            assert client.api(method, path, body()).status_code == 200
            r = other.api("GET", "/v1/account/session")
            assert r.status_code == 401 and r.json()["error"] == "login_required", path
            assert client.api("GET", "/v1/account/session").status_code == 200  # the caller stays in
        finally:
            other.close()


def test_enrolling_2fa_ends_the_other_sessions(client, acct):
    assert client.signup().status_code == 201
    other = ConsoleClient(acct[0].url, drift=DRIFT)
    other.email = client.email
    try:
        assert other.login().status_code == 200  # no 2FA yet: password alone
        client.enrol()
        assert other.api("GET", "/v1/account/session").status_code == 401
        assert client.api("GET", "/v1/account/session").json()["two_factor"] is True
    finally:
        other.close()
