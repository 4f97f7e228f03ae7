"""The key lifecycle through the service, observed over real HTTP by a running server."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.keys.errors import KeyStateError, StepUpRequired, WithdrawNeedsIpAllowlist
from kptest.clients import ed25519_keypair, ed25519_sign, now_ms, signed_get


def _status(server, issued_key: str, secret: str) -> int:
    return signed_get(server.url, "/api/v3/account", issued_key, secret).status_code


def test_rotate_keeps_the_old_secret_for_the_grace_period(server, services, make_key):
    issued = make_key()
    old = issued.secret
    grace = dt.timedelta(seconds=2)
    rotated = services.keys.rotate(issued.info.api_key, grace=grace, step_up=StepUp.operator())
    grace_over = time.monotonic() + grace.total_seconds()  # the grace period ends before this
    assert rotated.secret and rotated.secret != old
    assert rotated.info.api_key == issued.info.api_key
    assert _status(server, issued.info.api_key, rotated.secret) == 200
    assert _status(server, issued.info.api_key, old) == 200
    # Wait for the old secret to be refused, not for a fixed time: it must be, once the grace is over.
    deadline = grace_over + 0.5
    while (status := _status(server, issued.info.api_key, old)) == 200:
        assert time.monotonic() < deadline, "the old secret was still accepted 0.5 s after its grace period"
        time.sleep(0.05)
    assert status == 401
    assert _status(server, issued.info.api_key, rotated.secret) == 200


def test_rotate_without_grace_ends_the_old_secret_at_once(server, services, make_key):
    issued = make_key()
    rotated = services.keys.rotate(issued.info.api_key, grace=dt.timedelta(0), step_up=StepUp.operator())
    assert _status(server, issued.info.api_key, issued.secret) == 401
    assert _status(server, issued.info.api_key, rotated.secret) == 200


def test_rotate_ed25519_takes_a_new_public_key(server, services, make_key):
    priv1, pub1 = ed25519_keypair()
    priv2, pub2 = ed25519_keypair()
    issued = make_key(key_type="ed25519", public_key=pub1)
    with pytest.raises(Exception, match="new Ed25519 public key"):
        services.keys.rotate(issued.info.api_key, grace=dt.timedelta(hours=1), step_up=StepUp.operator())
    rotated = services.keys.rotate(
        issued.info.api_key, grace=dt.timedelta(0), public_key=pub2, step_up=StepUp.operator()
    )
    assert rotated.secret is None
    import httpx

    def call(priv: str) -> int:
        q = f"timestamp={now_ms()}"
        return httpx.get(
            f"{server.url}/api/v3/account?{q}&signature={ed25519_sign(priv, q)}",
            headers={"X-MBX-APIKEY": issued.info.api_key},
        ).status_code

    assert call(priv2) == 200
    assert call(priv1) == 401


def test_revoke_all(server, services, make_user, make_key):
    user = make_user()
    keys = [make_key(user=user) for _ in range(3)]
    other = make_key()
    revoked = services.keys.revoke_all(user.id)
    assert sorted(revoked) == sorted(k.info.api_key for k in keys)
    for k in keys:
        assert _status(server, k.info.api_key, k.secret) == 401
    assert _status(server, other.info.api_key, other.secret) == 200
    assert services.keys.revoke_all(user.id) == []


def test_revocation_is_final(services, make_key):
    issued = make_key()
    services.keys.revoke(issued.info.api_key)
    with pytest.raises(KeyStateError):
        services.keys.enable(issued.info.api_key, step_up=StepUp.operator())
    with pytest.raises(KeyStateError):
        services.keys.rotate(issued.info.api_key, grace=dt.timedelta(0), step_up=StepUp.operator())


def test_widening_needs_step_up_and_narrowing_does_not(services, make_key):
    issued = make_key(scopes=("read", "trade"), ips=["10.0.0.0/8"], max_notional="1000")
    key = issued.info.api_key
    narrowed = services.keys.update(key, scopes=["read"], ips=["10.1.0.0/16"], max_notional="500")
    assert narrowed.restrictions.max_notional is not None
    for change in (
        {"scopes": ["read", "trade"]},
        {"ips": ["10.0.0.0/8"]},
        {"ips": []},
        {"max_notional": "600"},
        {"max_notional": None},
    ):
        with pytest.raises(StepUpRequired):
            services.keys.update(key, **change)
    widened = services.keys.update(key, scopes=["read", "trade"], step_up=StepUp.operator())
    assert {s.value for s in widened.scopes} == {"read", "trade"}


def test_withdraw_needs_an_ip_allowlist(services, make_user, make_key):
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.create(make_user().id, scopes=("read", "withdraw"), step_up=StepUp.operator())
    issued = make_key(scopes=("read", "withdraw"), ips=["127.0.0.1"])
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.update(issued.info.api_key, ips=[], step_up=StepUp.operator())


def test_new_keys_are_read_only_by_default(services, make_user):
    issued = services.keys.create(make_user().id, step_up=StepUp.operator())
    assert {s.value for s in issued.info.scopes} == {"read"}


def test_last_used_is_recorded_in_batches(server, services, make_key):
    issued = make_key()
    assert services.keys.get(issued.info.api_key).last_used_at is None
    before = dt.datetime.now(dt.UTC)
    assert _status(server, issued.info.api_key, issued.secret) == 200
    deadline = time.monotonic() + 5
    info = services.keys.get(issued.info.api_key)
    while info.last_used_at is None:
        assert time.monotonic() < deadline, "last use was not recorded within 5 s"
        time.sleep(0.02)
        info = services.keys.get(issued.info.api_key)
    assert info.last_used_at >= before - dt.timedelta(seconds=1)
    assert info.last_used_ip == "127.0.0.1"


def test_idle_expiry_for_unrestricted_trading_keys(services, make_key):
    """A key that can trade with no IP allowlist expires after the idle period; with an allowlist it does not."""
    loose = make_key(scopes=("read", "trade"))
    bound = make_key(scopes=("read", "trade"), ips=["127.0.0.1"])
    reader = make_key(scopes=("read",))
    days = services.settings.idle_expiry_days
    assert loose.info.idle_expiry_applies and loose.info.expires_at is not None
    assert not bound.info.idle_expiry_applies and bound.info.expires_at is None
    assert not reader.info.idle_expiry_applies
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=days, hours=1)
    result = services.keys.records.sweep(now=later)
    assert result["expired"] >= 1
    assert services.keys.get(loose.info.api_key).status == "expired"
    assert services.keys.get(bound.info.api_key).status == "active"
    assert services.keys.get(reader.info.api_key).status == "active"


def test_expired_key_is_rejected_by_the_pipeline_before_any_sweep(services, make_key):
    """Verification enforces idle expiry by itself; the sweep only records it."""
    from keyplane.auth.errors import KeyExpired
    from keyplane.auth.gates import MemoryGate
    from keyplane.auth.keycache import KeyCache
    from keyplane.auth.pipeline import Authenticator

    issued = make_key(scopes=("read", "trade"))
    record = services.keys.records.load(issued.info.api_key)
    assert record is not None
    auth = Authenticator(services.settings, KeyCache(services.keys.records.load), gate=MemoryGate(services.settings))
    auth.check_key_state(record, time.time())
    with pytest.raises(KeyExpired, match="idle days"):
        auth.check_key_state(record, time.time() + services.settings.idle_expiry_days * 86400 + 60)


def test_audit_events_for_every_change(services, make_key):
    from sqlalchemy import select

    from keyplane.audit.models import AuditEvent

    issued = make_key(scopes=("read", "trade"))
    key = issued.info.api_key
    services.keys.update(key, label="bot")
    services.keys.disable(key)
    services.keys.enable(key, step_up=StepUp.operator())
    services.keys.rotate(key, grace=dt.timedelta(0), step_up=StepUp.operator())
    services.keys.revoke(key)
    with services.db.read() as s:
        types = list(
            s.execute(select(AuditEvent.event_type).where(AuditEvent.key_id == key).order_by(AuditEvent.seq)).scalars()
        )
        blobs = list(s.execute(select(AuditEvent.data).where(AuditEvent.key_id == key)).scalars())
    assert types == [
        "key:api_key:created",
        "key:api_key:updated",
        "key:api_key:disabled",
        "key:api_key:enabled",
        "key:api_key:rotated",
        "key:api_key:revoked",
    ]
    assert not any(issued.secret in b for b in blobs)
