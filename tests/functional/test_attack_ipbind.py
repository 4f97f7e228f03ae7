"""Attacks on "only a key bound to an IP may withdraw; an unbound trading key expires when idle".

A key counts as bound only if no allowlist entry is broader than an IPv4 /24 or an IPv6 /48, and
IPv6 entries that carry IPv4 addresses (IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96``)
count by the IPv4 block they embed. An entry that *contains* one of those IPv4-carrying blocks
(``64:ff9b::/64`` ... ``64:ff9b::/95``) spans every IPv4 address there is through NAT64, so it must
not bind a key either.
"""

from __future__ import annotations

import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.keys.errors import InvalidRestriction, WithdrawNeedsIpAllowlist
from keyplane.keys.scopes import Restrictions, parse_networks
from kptest.clients import signed_get
from kptest.native import own_server

# Every one of these allowlists lets a key be used from a network far broader than one site's.
BROAD = [
    ["0.0.0.0/0"],
    ["::/0"],
    ["10.0.0.0/8"],
    ["203.0.113.0/23"],
    ["2001:db8::/47"],
    ["::ffff:0.0.0.0/96"],
    ["::ffff:10.0.0.0/104"],
    ["::ffff:203.0.113.0/119"],
    ["64:ff9b::/96"],
    ["64:ff9b::cb00:7100/119"],
    ["127.0.0.1", "0.0.0.0/0"],  # one broad entry is enough
    ["127.0.0.1/32", "::/0"],
]

# Supernets of the NAT64 well-known prefix: narrower than /48 by prefix length, but each holds all
# of 64:ff9b::/96, i.e. every IPv4 address as NAT64 presents it.
NAT64_SUPERNETS = [["64:ff9b::/64"], ["64:ff9b::/80"], ["64:ff9b::/95"]]


@pytest.mark.parametrize("ips", BROAD, ids=",".join)
def test_a_broad_allowlist_never_gets_withdraw(services, make_user, ips):
    owner = make_user()
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.create(
            owner.id,
            scopes=("read", "withdraw"),
            restrictions=services.keys.build_restrictions(ips=ips),
            step_up=StepUp.operator(),
        )
    # Nor by update or by swapping a bound list for a broad one, even with the operator's say-so.
    k = services.keys.create(
        owner.id,
        scopes=("read", "withdraw"),
        restrictions=services.keys.build_restrictions(ips=["127.0.0.1"]),
        step_up=StepUp.operator(),
    )
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.update(k.info.api_key, ips=ips, step_up=StepUp.operator())
    t = services.keys.create(
        owner.id,
        scopes=("read", "trade"),
        restrictions=services.keys.build_restrictions(ips=ips),
        step_up=StepUp.operator(),
    )
    assert t.info.idle_expiry_applies, "an unbound trading key must expire when idle"
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.update(t.info.api_key, scopes=["read", "trade", "withdraw"], step_up=StepUp.operator())


@pytest.mark.parametrize("ips", NAT64_SUPERNETS, ids=",".join)
def test_a_nat64_supernet_does_not_bind_a_key(ips):
    """64:ff9b::/64 has a prefix longer than /48, yet it contains 64:ff9b::/96 and with it every
    IPv4 address seen through NAT64: it must not count as bound."""
    r = Restrictions(ip_allowlist=parse_networks(ips))
    assert not r.is_ip_bound, f"{ips} spans every IPv4 address via NAT64 but counts as an IP binding"


@pytest.mark.parametrize("ips", NAT64_SUPERNETS, ids=",".join)
def test_a_nat64_supernet_cannot_withdraw(services, make_user, ips):
    owner = make_user()
    with pytest.raises(WithdrawNeedsIpAllowlist):
        services.keys.create(
            owner.id,
            scopes=("read", "withdraw"),
            restrictions=services.keys.build_restrictions(ips=ips),
            step_up=StepUp.operator(),
        )


def test_a_nat64_supernet_key_withdraws_from_any_ipv4_client(make_settings):
    """End to end: behind a NAT64/SIIT front (a trusted proxy that reports clients as 64:ff9b::a.b.c.d),
    a key allowlisted for 64:ff9b::/64 is reported as able to withdraw, from whatever IPv4 address."""
    with own_server(make_settings, trusted_proxies="127.0.0.1/32") as (srv, svc):
        owner = svc.accounts.create_user("nat64-owner@example.com", "a long enough password")
        try:
            k = svc.keys.create(
                owner.id,
                scopes=("read", "withdraw"),
                restrictions=svc.keys.build_restrictions(ips=["64:ff9b::/64"]),
                step_up=StepUp.operator(),
            )
        except WithdrawNeedsIpAllowlist:
            return  # the fix holds: nothing to show end to end
        for client in ("64:ff9b::808:808", "64:ff9b::cb00:7109", "64:ff9b::102:304"):  # 8.8.8.8, 203.0.113.9, 1.2.3.4
            r = signed_get(
                srv.url, "/sapi/v1/account/apiRestrictions", k.info.api_key, k.secret,
                headers={"X-Forwarded-For": client},
            )  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["callerIp"] == client
            assert r.json()["enableWithdrawals"] is False, (
                f"a key usable from every IPv4 address through NAT64 ({client}) may withdraw"
            )


def test_thirty_narrow_entries_still_bind(services, make_user):
    """Control: many narrow entries (30 /25s, /48s) are a binding by the documented rule."""
    owner = make_user()
    ips = [f"198.51.{i}.0/25" for i in range(20)] + [f"2001:db8:{i:x}::/48" for i in range(10)]
    k = services.keys.create(
        owner.id,
        scopes=("read", "withdraw"),
        restrictions=services.keys.build_restrictions(ips=ips),
        step_up=StepUp.operator(),
    )
    assert not k.info.idle_expiry_applies
    with pytest.raises(InvalidRestriction):
        services.keys.build_restrictions(ips=[*ips, "192.0.2.1"])  # 31 entries
