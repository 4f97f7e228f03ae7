"""What counts as binding a key to an IP: the one rule behind withdraw and idle expiry."""

from __future__ import annotations

import pytest

from keyplane.keys.scopes import (
    MIN_BOUND_PREFIX,
    Restrictions,
    Scope,
    idle_expiry_applies,
    parse_networks,
    usable_scopes,
)


def _r(*ips: str) -> Restrictions:
    return Restrictions(ip_allowlist=parse_networks(ips))


@pytest.mark.parametrize(
    ("ips", "bound"),
    [
        ((), False),
        (("0.0.0.0/0",), False),
        (("::/0",), False),
        (("0.0.0.0/0", "::/0"), False),
        (("10.0.0.0/8",), False),
        (("203.0.112.0/23",), False),
        (("203.0.113.0/24",), True),
        (("203.0.113.7",), True),
        (("2001:db8::/32",), False),
        (("2001:db8::/47",), False),
        (("2001:db8::/48",), True),
        (("2001:db8::1",), True),
        # One broad entry is enough to make the key usable from anywhere in it.
        (("203.0.113.7", "0.0.0.0/0"), False),
        (("203.0.113.7", "2001:db8::/48"), True),
        # IPv6 prefixes that embed an IPv4 address bind no tighter than the IPv4 block inside.
        (("::ffff:0:0/96",), False),
        (("64:ff9b::/96",), False),
        (("64:ff9b::/100",), False),
        (("64:ff9b::cb00:7100/120",), True),
        (("::ffff:203.0.113.7",), True),
    ],
)
def test_is_ip_bound(ips, bound):
    assert _r(*ips).is_ip_bound is bound


def test_too_broad_names_the_entries_that_spoil_the_binding():
    r = _r("203.0.113.7", "0.0.0.0/0", "2001:db8::/32")
    assert [str(n) for n in r.too_broad()] == ["0.0.0.0/0", "2001:db8::/32"]
    assert MIN_BOUND_PREFIX == {4: 24, 6: 48}


def test_idle_expiry_and_withdraw_follow_the_binding():
    trade = frozenset({Scope.READ, Scope.TRADE})
    withdraw = frozenset({Scope.READ, Scope.WITHDRAW})
    everywhere = _r("0.0.0.0/0", "::/0")
    bound = _r("203.0.113.7")
    assert idle_expiry_applies(trade, Restrictions())
    assert idle_expiry_applies(trade, everywhere)
    assert not idle_expiry_applies(trade, bound)
    assert not idle_expiry_applies(frozenset({Scope.READ}), everywhere)
    assert usable_scopes(withdraw, everywhere) == {Scope.READ}
    assert usable_scopes(withdraw, Restrictions()) == {Scope.READ}
    assert usable_scopes(withdraw, bound) == withdraw


@pytest.mark.parametrize("entry", ["64:ff9b::/64", "64:ff9b::/80", "64:ff9b::/95", "::fffe:0:0/95", "::/64"])
def test_a_supernet_of_an_ipv4_embedding_never_binds(entry):
    """Such an entry is a /64 or narrower by its length, yet it admits every IPv4 client."""
    import ipaddress

    from keyplane.keys.scopes import binds

    assert not binds(ipaddress.ip_network(entry))
