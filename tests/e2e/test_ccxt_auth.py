"""ccxt's binance class, unmodified, signs requests that keyplane verifies (HMAC and Ed25519)."""

from __future__ import annotations

import ccxt
import pytest

from kptest.clients import ccxt_binance, ed25519_keypair

pytestmark = pytest.mark.e2e


def test_fetch_balance_hmac(server, make_key):
    issued = make_key(scopes=("read",))
    ex = ccxt_binance(server.url, issued.info.api_key, issued.secret)
    balance = ex.fetch_balance()
    assert balance["info"]["accountType"] == "SPOT"
    assert balance["info"]["canTrade"] is False


def test_fetch_balance_ed25519(server, make_key):
    private_pem, public_pem = ed25519_keypair()
    issued = make_key(scopes=("read", "trade"), key_type="ed25519", public_key=public_pem)
    assert issued.secret is None
    ex = ccxt_binance(server.url, issued.info.api_key, private_pem)
    balance = ex.fetch_balance()
    assert balance["info"]["canTrade"] is True


def test_api_restrictions_reports_the_key(server, make_key):
    issued = make_key(scopes=("read", "trade", "withdraw"), ips=["127.0.0.1/32", "::1"], symbols=["BTCUSDT"])
    ex = ccxt_binance(server.url, issued.info.api_key, issued.secret)
    r = ex.sapi_get_account_apirestrictions()
    assert r["ipRestrict"] is True
    assert r["enableReading"] is True
    assert r["enableSpotAndMarginTrading"] is True
    assert r["enableWithdrawals"] is True
    assert r["callerIp"] == "127.0.0.1"
    assert r["symbols"] == ["BTCUSDT"]
    assert r["createTime"] > 0


def test_wrong_secret_is_authentication_error(server, make_key):
    issued = make_key()
    ex = ccxt_binance(server.url, issued.info.api_key, "kps_" + "A" * 46)
    with pytest.raises(ccxt.AuthenticationError, match="Signature for this request is not valid"):
        ex.fetch_balance()


def test_ed25519_key_rejects_other_private_key(server, make_key):
    _, public_pem = ed25519_keypair()
    other_private, _ = ed25519_keypair()
    issued = make_key(key_type="ed25519", public_key=public_pem)
    ex = ccxt_binance(server.url, issued.info.api_key, other_private)
    with pytest.raises(ccxt.AuthenticationError):
        ex.fetch_balance()


def test_missing_scope_is_permission_denied(server, make_key):
    issued = make_key(scopes=("trade",))
    ex = ccxt_binance(server.url, issued.info.api_key, issued.secret)
    with pytest.raises(ccxt.PermissionDenied, match="needs the 'read' scope"):
        ex.fetch_balance()


def test_clock_skew_is_invalid_nonce(server, make_key):
    issued = make_key()
    ex = ccxt_binance(server.url, issued.info.api_key, issued.secret, adjustForTimeDifference=False)
    ex.options["timeDifference"] = 120_000  # the client clock is two minutes behind
    with pytest.raises(ccxt.InvalidNonce, match="ms behind"):
        ex.fetch_balance()
