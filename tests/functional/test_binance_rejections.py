"""Every reason a Binance-dialect request is rejected, over real HTTP: each has its own stable
``reason`` code, the Binance code ccxt maps, a message that names the cause, and never a 500."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from kptest.clients import ed25519_keypair, ed25519_sign, hmac_sign, now_ms

ACCOUNT = "/api/v3/account"


def _get(url: str, key: str | None, query: str, **kw: object) -> httpx.Response:
    headers = {} if key is None else {"X-MBX-APIKEY": key}
    return httpx.get(f"{url}{ACCOUNT}?{query}", headers=headers, **kw)  # type: ignore[arg-type]


def _signed_query(secret: str, params: dict[str, object]) -> str:
    q = urlencode(params)
    return f"{q}&signature={hmac_sign(secret, q)}"


@pytest.fixture
def key(make_key):
    return make_key(scopes=("read",))


def _check(resp: httpx.Response, status: int, binance_code: int, reason: str, *fragments: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == binance_code, body
    assert body["reason"] == reason, body
    assert resp.headers["x-keyplane-error"] == reason
    for fragment in fragments:
        assert fragment in body["msg"], body["msg"]


def test_accepts_a_good_request(server, key):
    resp = _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": now_ms()}))
    assert resp.status_code == 200, resp.text
    assert "code" not in resp.json()


def test_missing_key_header(server, key):
    _check(
        _get(server.url, None, _signed_query(key.secret, {"timestamp": now_ms()})),
        401,
        -2014,
        "key_missing",
        "X-MBX-APIKEY",
    )


@pytest.mark.parametrize(
    "bad_key",
    ["nonsense", "kp_live_short", "kp_live_" + "!" * 28, "kp_prod_" + "a" * 28, "", "kp_live_" + "a" * 40],
)
def test_malformed_key(server, key, bad_key):
    resp = _get(server.url, bad_key, _signed_query(key.secret, {"timestamp": now_ms()}))
    if bad_key.strip() == "":
        _check(resp, 401, -2014, "key_missing")
    else:
        _check(resp, 401, -2014, "key_malformed", "malformed")


def test_key_with_bad_checksum(server, key):
    k = key.info.api_key
    flipped = k[:-1] + ("A" if k[-1] != "A" else "B")
    _check(
        _get(server.url, flipped, _signed_query(key.secret, {"timestamp": now_ms()})),
        401,
        -2014,
        "key_checksum",
        "checksum",
    )


def test_unknown_key(server, key):
    from keyplane.keys.format import new_api_key

    _check(
        _get(server.url, new_api_key(), _signed_query(key.secret, {"timestamp": now_ms()})),
        401,
        -2015,
        "key_unknown",
        "does not exist",
    )


def test_revoked_key(server, services, key):
    services.keys.revoke(key.info.api_key)
    _check(
        _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": now_ms()})),
        401,
        -1002,
        "key_revoked",
        "revoked",
    )


def test_disabled_key_then_enabled(server, services, key):
    services.keys.disable(key.info.api_key)
    q = _signed_query(key.secret, {"timestamp": now_ms()})
    _check(_get(server.url, key.info.api_key, q), 401, -1002, "key_disabled", "disabled")
    services.keys.enable(key.info.api_key, step_up=StepUp.operator())
    assert _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": now_ms()})).status_code == 200


def test_expired_key(server, services, make_user):
    # Issued a minute ago with a 1 s lifetime (the service takes ``now=``): expired, with no wait.
    issued_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    issued = services.keys.create(
        make_user().id,
        restrictions=services.keys.build_restrictions(expires_at=issued_at + dt.timedelta(seconds=1)),
        step_up=StepUp.operator(),
        now=issued_at,
    )
    _check(
        _get(server.url, issued.info.api_key, _signed_query(issued.secret, {"timestamp": now_ms()})),
        401,
        -1002,
        "key_expired",
        "expired",
    )


def test_bad_signature(server, key):
    q = urlencode({"timestamp": now_ms()})
    other = hmac_sign("kps_not_the_secret", q)
    _check(_get(server.url, key.info.api_key, f"{q}&signature={other}"), 401, -1022, "signature_invalid", "not valid")


def test_signature_over_other_params(server, key):
    q = urlencode({"timestamp": now_ms()})
    sig = hmac_sign(key.secret, q)
    _check(_get(server.url, key.info.api_key, f"{q}&extra=1&signature={sig}"), 401, -1022, "signature_invalid")


def test_uppercase_hex_signature_is_accepted(server, key):
    q = urlencode({"timestamp": now_ms()})
    resp = _get(server.url, key.info.api_key, f"{q}&signature={hmac_sign(key.secret, q).upper()}")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("sig", ["abc", "zz" * 32, "a" * 63, "A" * 128])
def test_signature_in_wrong_encoding_hmac(server, key, sig):
    q = urlencode({"timestamp": now_ms()})
    _check(_get(server.url, key.info.api_key, f"{q}&signature={sig}"), 401, -1022, "signature_encoding", "hex")


def test_signature_in_wrong_encoding_ed25519(server, make_key):
    priv, pub = ed25519_keypair()
    issued = make_key(key_type="ed25519", public_key=pub)
    q = urlencode({"timestamp": now_ms()})
    hex_sig = hmac_sign("whatever", q)  # hex where base64 is expected
    _check(_get(server.url, issued.info.api_key, f"{q}&signature={hex_sig}"), 401, -1022, "signature_encoding")
    good = ed25519_sign(priv, q)
    assert _get(server.url, issued.info.api_key, f"{q}&signature={good}").status_code == 200


def test_missing_signature(server, key):
    _check(
        _get(server.url, key.info.api_key, urlencode({"timestamp": now_ms()})),
        400,
        -1102,
        "signature_missing",
        "signature",
    )


def test_missing_timestamp(server, key):
    _check(
        _get(server.url, key.info.api_key, _signed_query(key.secret, {"recvWindow": 5000})),
        400,
        -1102,
        "param_missing",
        "timestamp",
    )


def test_timestamp_not_a_number(server, key):
    _check(
        _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": "soon"})),
        400,
        -1102,
        "param_invalid",
        "timestamp",
    )


def test_timestamp_too_old_names_server_time_and_offset(server, key):
    resp = _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": now_ms() - 7000}))
    _check(resp, 400, -1021, "timestamp_outside_window", "server time is", "ms behind", "recvWindow is 5000")


def test_timestamp_in_the_future(server, key):
    resp = _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": now_ms() + 3000}))
    _check(resp, 400, -1021, "timestamp_outside_window", "ahead", "server time is")


def test_wider_recv_window_accepts_an_older_timestamp(server, key):
    q = _signed_query(key.secret, {"timestamp": now_ms() - 7000, "recvWindow": 20000})
    assert _get(server.url, key.info.api_key, q).status_code == 200


def test_microsecond_timestamps(server, key):
    q = _signed_query(key.secret, {"timestamp": now_ms() * 1000})
    assert _get(server.url, key.info.api_key, q).status_code == 200


@pytest.mark.parametrize("window", ["abc", "60001", "0", "-5", "nan", "inf"])
def test_bad_recv_window(server, key, window):
    resp = _get(server.url, key.info.api_key, _signed_query(key.secret, {"timestamp": now_ms(), "recvWindow": window}))
    _check(resp, 400, -1102, "recv_window_invalid", "recvWindow")


def test_duplicated_parameter(server, key):
    q = f"timestamp={now_ms()}&timestamp={now_ms()}"
    _check(
        _get(server.url, key.info.api_key, f"{q}&signature={hmac_sign(key.secret, q)}"),
        400,
        -1101,
        "duplicate_parameter",
        "'timestamp'",
    )


def test_duplicated_signature(server, key):
    q = urlencode({"timestamp": now_ms()})
    sig = hmac_sign(key.secret, q)
    _check(
        _get(server.url, key.info.api_key, f"{q}&signature={sig}&signature={sig}"),
        400,
        -1101,
        "duplicate_parameter",
        "signature",
    )


def test_body_over_the_limit(server, key, settings):
    q = _signed_query(key.secret, {"timestamp": now_ms()})
    big = b"x=" + b"a" * (settings.max_body_bytes + 1)
    resp = httpx.request("GET", f"{server.url}{ACCOUNT}?{q}", headers={"X-MBX-APIKEY": key.info.api_key}, content=big)
    _check(resp, 413, -1100, "body_too_large", str(settings.max_body_bytes))


def test_ip_not_in_allowlist_names_the_seen_ip(server, make_key):
    issued = make_key(ips=["203.0.113.0/24", "2001:db8::/32"])
    resp = _get(server.url, issued.info.api_key, _signed_query(issued.secret, {"timestamp": now_ms()}))
    _check(resp, 401, -2015, "ip_not_allowed", "127.0.0.1")


def test_ip_in_allowlist(server, make_key):
    issued = make_key(ips=["127.0.0.0/8"])
    assert (
        _get(server.url, issued.info.api_key, _signed_query(issued.secret, {"timestamp": now_ms()})).status_code == 200
    )


def test_missing_scope(server, make_key):
    issued = make_key(scopes=("trade",))
    resp = _get(server.url, issued.info.api_key, _signed_query(issued.secret, {"timestamp": now_ms()}))
    _check(resp, 401, -2015, "scope_missing", "has no operation privilege", "'read' scope", "trade")


def test_introspection_needs_no_particular_scope(server, make_key):
    issued = make_key(scopes=("trade",))
    q = _signed_query(issued.secret, {"timestamp": now_ms()})
    resp = httpx.get(f"{server.url}/sapi/v1/account/apiRestrictions?{q}", headers={"X-MBX-APIKEY": issued.info.api_key})
    assert resp.status_code == 200
    assert resp.json()["enableReading"] is False


def test_signature_in_the_form_body(server, key):
    """Binance's payload is query string + body; a signature may sit in either."""
    body = urlencode({"timestamp": now_ms()})
    sig = hmac_sign(key.secret, body)
    resp = httpx.request(
        "GET",
        f"{server.url}{ACCOUNT}",
        headers={"X-MBX-APIKEY": key.info.api_key, "Content-Type": "application/x-www-form-urlencoded"},
        content=f"{body}&signature={sig}",
    )
    assert resp.status_code == 200, resp.text


def test_unsigned_public_endpoints_need_no_key(server):
    assert httpx.get(f"{server.url}/api/v3/time").json()["serverTime"] > 0
    assert httpx.get(f"{server.url}/api/v3/ping").json() == {}
