"""The IP-binding rule, the no-revival rule for expired keys, and leak revocation, through the key
service and a running server."""

from __future__ import annotations

import datetime as dt
import inspect

import pytest
from sqlalchemy import select, update

from conftest import key_maker
from keyplane.accounts.stepup import StepUp
from keyplane.audit.events import EventType
from keyplane.audit.models import AuditEvent
from keyplane.keys import leaks
from keyplane.keys import records as key_records
from keyplane.keys import service as key_service
from keyplane.keys.errors import KeyStateError, StepUpRequired, WithdrawNeedsIpAllowlist
from keyplane.keys.models import ApiKey
from keyplane.keys.scopes import Scope
from kptest.clients import signed_get
from kptest.exchange import signed_request

EVERYWHERE = ["0.0.0.0/0", "::/0"]


def _events(services, key: str) -> list[str]:
    with services.db.read() as s:
        return list(
            s.execute(select(AuditEvent.event_type).where(AuditEvent.key_id == key).order_by(AuditEvent.seq)).scalars()
        )


def _idle_expired(services, make_key, **kw):
    """A trade key created longer ago than the idle period and never used since."""
    days = services.settings.idle_expiry_days
    issued = make_key(scopes=("read", "trade"), **kw)
    with services.db.transaction() as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.public_id == issued.info.api_key)
            .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days, hours=1))
        )
    return issued


# -- item: an allowlist that admits the whole internet is not an IP binding ----------------------


def test_withdraw_with_an_allowlist_of_the_whole_internet_is_refused(services, make_user, make_key):
    user = make_user()
    restrictions = services.keys.build_restrictions(ips=EVERYWHERE)
    with pytest.raises(WithdrawNeedsIpAllowlist, match=r"0\.0\.0\.0/0, ::/0 are broader than /24 \(IPv4\) or /48"):
        services.keys.create(user.id, scopes=("read", "withdraw"), restrictions=restrictions, step_up=StepUp.operator())
    with pytest.raises(WithdrawNeedsIpAllowlist, match=r"10\.0\.0\.0/8 is broader"):
        services.keys.create(
            user.id,
            scopes=("read", "withdraw"),
            restrictions=services.keys.build_restrictions(ips=["203.0.113.7", "10.0.0.0/8"]),
            step_up=StepUp.operator(),
        )
    # A /24 and a /48 bind; the key may withdraw.
    ok = make_key(user=user, scopes=("read", "withdraw"), ips=["203.0.113.0/24", "2001:db8::/48"])
    assert not ok.info.idle_expiry_applies
    # Broadening a withdraw key's allowlist is refused even with a fresh 2FA check.
    with pytest.raises(WithdrawNeedsIpAllowlist, match="broader than"):
        services.keys.update(ok.info.api_key, ips=EVERYWHERE, step_up=StepUp.operator())
    # Adding withdraw to a key whose allowlist does not bind it is refused too.
    trade = make_key(user=user, scopes=("read", "trade"), ips=EVERYWHERE)
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.update(trade.info.api_key, scopes=["read", "trade", "withdraw"], step_up=StepUp.operator())


def test_a_key_open_to_the_whole_internet_expires_when_idle(own_services):
    services, make_key = own_services, key_maker(own_services)  # the sweep acts on every key
    loose = make_key(scopes=("read", "trade"), ips=EVERYWHERE)
    assert loose.info.idle_expiry_applies and loose.info.expires_at is not None
    record = services.keys.records.load(loose.info.api_key)
    assert record is not None and record.idle_s == services.settings.idle_expiry_days * 86400
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=services.settings.idle_expiry_days, hours=1)
    services.keys.records.sweep(now=later)
    assert services.keys.get(loose.info.api_key).status == "expired"


def test_a_stored_withdraw_key_without_a_binding_cannot_withdraw(server, services, make_key):
    """A key written before the rule (withdraw with 0.0.0.0/0) keeps the scope on record, but the
    verification record withholds it, so a withdrawal is refused."""
    issued = make_key(scopes=("read", "withdraw"), ips=["127.0.0.1"])
    key = issued.info.api_key
    with services.db.transaction() as s:
        s.execute(update(ApiKey).where(ApiKey.public_id == key).values(ip_allowlist="0.0.0.0/0,::/0"))
    record = services.keys.records.load(key)
    assert record is not None
    assert Scope.WITHDRAW not in record.scopes and record.withheld_scopes == {Scope.WITHDRAW}
    assert record.idle_s is not None
    # The server has not cached the key yet (it was never used), so it loads this record.
    r = signed_request("POST", server.url, "/sapi/v1/capital/withdraw/apply", key, issued.secret,
                       {"coin": "USDT", "address": "0x" + "ab" * 20, "amount": "1"})  # fmt: skip
    assert r.status_code == 401 and r.json()["reason"] == "scope_missing", r.text
    restrictions = signed_get(server.url, "/sapi/v1/account/apiRestrictions", key, issued.secret).json()
    assert restrictions["enableWithdrawals"] is False


# -- item: an expired key stays expired -----------------------------------------------------------


@pytest.mark.parametrize("swept", [True, False], ids=["after-the-sweep", "before-the-sweep"])
def test_no_change_revives_an_idle_expired_key(own_services, swept):
    services, make_key = own_services, key_maker(own_services)  # the sweep acts on every key
    issued = _idle_expired(services, make_key)
    key = issued.info.api_key
    if swept:
        services.keys.records.sweep()
        assert services.keys.get(key).status == "expired"
    assert services.keys.get(key).effective_status == "expired"
    # Adding an allowlist is a narrowing for a live key, but it would lift the idle expiry.
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.update(key, ips=["203.0.113.7"])
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.update(key, ips=["203.0.113.7"], expires_at=None, step_up=StepUp.operator())
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.enable(key, step_up=StepUp.operator())
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.rotate(key, grace=dt.timedelta(0), step_up=StepUp.operator())
    services.keys.disable(key)
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.enable(key, step_up=StepUp.operator())
    info = services.keys.get(key)
    assert info.effective_status in ("expired", "disabled") and info.restrictions.ip_allowlist == ()
    if swept:
        assert info.status == "expired"  # disabling an expired key leaves it expired
    assert services.keys.records.load(key).restrictions.ip_allowlist == ()


def test_an_explicit_expiry_that_passed_cannot_be_extended(own_services):
    services, make_key = own_services, key_maker(own_services)  # the sweep acts on every key
    issued = make_key(expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    key = issued.info.api_key
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.update(key, expires_at=later + dt.timedelta(days=30), step_up=StepUp.operator(), now=later)
    services.keys.records.sweep(now=later)
    assert services.keys.get(key).status == "expired"
    with pytest.raises(KeyStateError, match="stays expired"):
        services.keys.update(key, expires_at=None, step_up=StepUp.operator())


def test_a_disabled_key_is_widened_only_with_a_step_up(services, make_key):
    issued = make_key(scopes=("read",), ips=["203.0.113.7"])
    key = issued.info.api_key
    services.keys.disable(key)
    for change in ({"scopes": ["read", "trade"]}, {"ips": []}, {"ips": ["203.0.113.0/24"]}):
        with pytest.raises(StepUpRequired):
            services.keys.update(key, **change)
    assert services.keys.update(key, scopes=["read", "trade"], step_up=StepUp.operator()).status == "disabled"


def test_enable_has_no_default_step_up(services, make_key):
    assert inspect.signature(key_service.KeyService.enable).parameters["step_up"].default is inspect.Parameter.empty
    issued = make_key()
    services.keys.disable(issued.info.api_key)
    with pytest.raises(StepUpRequired):
        services.keys.enable(issued.info.api_key, step_up=None)
    assert services.keys.enable(issued.info.api_key, step_up=StepUp.operator()).status == "active"


# -- item: a leaked key is revoked together with its evidence -------------------------------------


def test_leak_revocation_and_its_evidence_are_one_transaction(services, make_key, monkeypatch):
    issued = make_key()
    key = issued.info.api_key
    found = [leaks.Leak(kind="api_key", masked="…", where="dump.txt:3", api_key=key, status="active")]
    real = key_records.audit

    def crash_on_leak(s, event, **kw):
        if event == EventType.KEY_LEAKED:
            raise RuntimeError("the process died here")
        return real(s, event, **kw)

    monkeypatch.setattr(key_records, "audit", crash_on_leak)  # every key event is written through it
    with pytest.raises(RuntimeError):
        leaks.revoke(services.keys, found)
    assert services.keys.get(key).status == "active"  # nothing was written: the key is still live
    assert "key:api_key:revoked" not in _events(services, key)
    monkeypatch.undo()

    assert leaks.revoke(services.keys, found) == [key]
    assert services.keys.get(key).status == "revoked"
    assert _events(services, key)[-2:] == ["key:api_key:revoked", "key:api_key:leaked"]


def test_every_place_a_key_leaked_is_recorded(services, make_key):
    issued = make_key()
    key = issued.info.api_key
    found = [
        leaks.Leak(kind="api_key", masked="…", where="a.txt:1", api_key=key, status="active"),
        leaks.Leak(kind="secret", masked="…", where="b.txt:9", api_key=key, status="active"),
        leaks.Leak(kind="api_key", masked="…", where="a.txt:1", api_key=key, status="active"),
    ]
    assert leaks.revoke(services.keys, found) == [key]
    with services.db.read() as s:
        rows = list(
            s.execute(
                select(AuditEvent.data, AuditEvent.user_id).where(
                    AuditEvent.key_id == key, AuditEvent.event_type == "key:api_key:leaked"
                )
            )
        )
    assert len(rows) == 2 and all(uid == issued.info.user_id for _, uid in rows)
    assert "a.txt:1" in rows[0][0] and "b.txt:9" in rows[1][0]
    # Found again later: already revoked, so nothing more is written.
    again = [leaks.Leak(kind="api_key", masked="…", where="c.txt:1", api_key=key, status="revoked")]
    assert leaks.revoke(services.keys, again) == []
