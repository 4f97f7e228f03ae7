from __future__ import annotations

import datetime as dt
import ipaddress
from decimal import Decimal

import pytest

from keyplane.keys.errors import InvalidRestriction
from keyplane.keys.rules import parse_expiry, parse_grace
from keyplane.keys.scopes import (
    Restrictions,
    Scope,
    parse_amount,
    parse_networks,
    parse_scopes,
    parse_symbols,
    scopes_text,
    widening,
)


def test_parse_scopes():
    assert parse_scopes(["read", "TRADE", "read,withdraw"]) == {Scope.READ, Scope.TRADE, Scope.WITHDRAW}
    assert scopes_text([Scope.WITHDRAW, Scope.READ]) == "read,withdraw"
    with pytest.raises(InvalidRestriction, match="unknown scope 'admin'") as e:
        parse_scopes(["admin"])
    assert e.value.field == "scopes"


@pytest.mark.parametrize("bad", ["1.2.3", "10.0.0.0/33", "fe80::zz", "localhost", "1.2.3.4/-1"])
def test_bad_networks(bad):
    with pytest.raises(InvalidRestriction, match="not an IPv4/IPv6"):
        parse_networks([bad])


def test_networks_v4_v6_dedup_and_limit():
    nets = parse_networks(["10.0.0.1", "10.0.0.1/32", "2001:db8::/32", " 192.168.0.0/16 "])
    assert [str(n) for n in nets] == ["10.0.0.1/32", "2001:db8::/32", "192.168.0.0/16"]
    assert len(parse_networks([f"10.0.0.{i}" for i in range(30)])) == 30
    with pytest.raises(InvalidRestriction, match="at most 30"):
        parse_networks([f"10.0.0.{i}" for i in range(31)])


def test_allows_ip_including_v4_mapped_v6():
    r = Restrictions(ip_allowlist=parse_networks(["127.0.0.0/8", "2001:db8::/32"]))
    assert r.allows_ip(ipaddress.ip_address("127.0.0.1"))
    assert r.allows_ip(ipaddress.ip_address("::ffff:127.0.0.1"))
    assert r.allows_ip(ipaddress.ip_address("2001:db8::1"))
    assert not r.allows_ip(ipaddress.ip_address("10.0.0.1"))
    assert not r.allows_ip(None)
    assert Restrictions().allows_ip(None)


def test_symbols_and_amounts():
    assert parse_symbols(["btcusdt", "ETHUSDT,BTCUSDT"]) == ("BTCUSDT", "ETHUSDT")
    with pytest.raises(InvalidRestriction):
        parse_symbols(["BTC/USDT"])
    assert parse_amount("1000.50", "max_notional") == Decimal("1000.50")
    assert parse_amount(None, "x") is None
    for bad in ("-1", "0", "abc", "NaN", "Infinity"):
        with pytest.raises(InvalidRestriction):
            parse_amount(bad, "max_notional")


def test_durations():
    assert parse_grace("30d", 60) == dt.timedelta(days=30)
    assert parse_grace("1w2d3h", 60) == dt.timedelta(days=9, hours=3)
    assert parse_grace("90", 60) == dt.timedelta(seconds=90)
    assert parse_grace("", 60) == dt.timedelta(seconds=60)
    for bad in ("soon", "3x", "d30"):
        with pytest.raises(InvalidRestriction, match="not a duration"):
            parse_grace(bad, 60)


def test_expiries():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_expiry("30d", now=now) == now + dt.timedelta(days=30)
    assert parse_expiry("2027-01-31", now=now) == dt.datetime(2027, 1, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert parse_expiry("", now=now) is None
    with pytest.raises(InvalidRestriction, match="an expiry is a date"):
        parse_expiry("soon", now=now)


def test_widening_table():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = Restrictions(
        ip_allowlist=parse_networks(["10.0.0.0/8"]),
        symbols=("BTCUSDT",),
        max_notional=Decimal(100),
        daily_withdraw_cap=Decimal(5),
        expires_at=now,
    )
    read = frozenset({Scope.READ})
    assert not widening(read, base, read, base)
    assert not widening(read, base, read, base.replace(ip_allowlist=parse_networks(["10.1.0.0/16"])))
    assert not widening(read, base, read, base.replace(max_notional=Decimal(50), expires_at=now - dt.timedelta(1)))
    cases = {
        "adds scope trade": (frozenset({Scope.READ, Scope.TRADE}), base),
        "removes the IP allowlist": (read, base.replace(ip_allowlist=())),
        "adds IP addresses": (read, base.replace(ip_allowlist=parse_networks(["11.0.0.0/8"]))),
        "adds symbols": (read, base.replace(symbols=("BTCUSDT", "ETHUSDT"))),
        "removes the symbol allowlist": (read, base.replace(symbols=())),
        "raises max_notional": (read, base.replace(max_notional=Decimal(101))),
        "raises daily_withdraw_cap": (read, base.replace(daily_withdraw_cap=None)),
        "extends expiry": (read, base.replace(expires_at=None)),
    }
    for reason, (scopes, new) in cases.items():
        assert reason in widening(read, base, scopes, new).reasons
