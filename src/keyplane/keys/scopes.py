"""Scopes and restrictions: what a key may do, from where, and how much.

Pure values and their validation. The lifecycle service stores them on the key; the verification
pipeline and the exchange service re-apply them on every request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum

from keyplane import parsing
from keyplane.keys.errors import InvalidRestriction

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The broadest allowlist entry that still binds a key to its owner's own network, by IP version.
# An IPv4 /24 is the smallest block routed on the internet, so anything broader spans networks of
# many operators; an IPv6 /48 is what one end site is assigned (RFC 6177). An entry broader than
# this still restricts where the key works, but the key no longer counts as bound to an IP: it may
# not withdraw, and it expires when idle like a key without an allowlist.
MIN_BOUND_PREFIX = {4: 24, 6: 48}
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (IPv4-mapped, NAT64): an entry
# inside one binds no tighter than the IPv4 block it embeds.
_V4_EMBEDDING = (ipaddress.IPv6Network("::ffff:0:0/96"), ipaddress.IPv6Network("64:ff9b::/96"))


def binds(net: IPNetwork) -> bool:
    """True if the allowlist entry ``net`` is narrow enough to count as an IP binding."""
    if isinstance(net, ipaddress.IPv6Network):
        for outer in _V4_EMBEDDING:
            if net.subnet_of(outer):
                return net.prefixlen - 96 >= MIN_BOUND_PREFIX[4]
            if outer.subnet_of(net):  # e.g. 64:ff9b::/64: it holds every IPv4 address
                return False
    return net.prefixlen >= MIN_BOUND_PREFIX[net.version]


class Scope(StrEnum):
    READ = "read"
    TRADE = "trade"
    WITHDRAW = "withdraw"


SCOPE_ORDER = (Scope.READ, Scope.TRADE, Scope.WITHDRAW)
_SYMBOL_RE = re.compile(r"[A-Z0-9]{2,20}")


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    scopes = set()
    for value in values:
        for part in str(value).split(","):
            name = part.strip().lower()
            if not name:
                continue
            try:
                scopes.add(Scope(name))
            except ValueError as e:
                raise InvalidRestriction(
                    f"unknown scope {part.strip()!r}; choose from read, trade, withdraw", field="scopes"
                ) from e
    return frozenset(scopes)


def scopes_text(scopes: Iterable[Scope]) -> str:
    have = set(scopes)
    return ",".join(s.value for s in SCOPE_ORDER if s in have)


def parse_networks(values: Iterable[str], limit: int = 30) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for value in values:
        for part in str(value).replace("\n", ",").split(","):
            text = part.strip()
            if not text:
                continue
            try:
                net = ipaddress.ip_network(text, strict=False)
            except ValueError as e:
                raise InvalidRestriction(f"{text!r} is not an IPv4/IPv6 address or CIDR", field="ips") from e
            if net not in nets:
                nets.append(net)
    if len(nets) > limit:
        raise InvalidRestriction(f"an IP allowlist holds at most {limit} entries; got {len(nets)}", field="ips")
    return tuple(nets)


def parse_symbols(values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for part in str(value).split(","):
            sym = part.strip().upper()
            if not sym:
                continue
            if not _SYMBOL_RE.fullmatch(sym):
                raise InvalidRestriction(f"{part.strip()!r} is not a symbol such as BTCUSDT", field="symbols")
            if sym not in out:
                out.append(sym)
    return tuple(out)


def parse_amount(value: str | Decimal | None, name: str) -> Decimal | None:
    """A positive amount written plainly (``1000.50``): at most 20 digits before the point and 18
    after it, so it stays exact and every later conversion to base units is bounded."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, Decimal):
            amount = parsing.bounded_decimal(value, name)
        else:
            amount = parsing.plain_decimal(str(value), name)
    except parsing.ParseError as e:
        raise InvalidRestriction(
            f"{name} must be a positive number such as 1000.50, got {parsing.shown(value)}", field=name
        ) from e
    if amount <= 0:
        raise InvalidRestriction(f"{name} must be a positive number, got {parsing.shown(value)}", field=name)
    return amount.normalize() if amount == amount.to_integral() else amount


@dataclass(frozen=True, slots=True)
class Restrictions:
    """Everything that limits a key beyond its scopes."""

    ip_allowlist: tuple[IPNetwork, ...] = ()
    symbols: tuple[str, ...] = ()
    max_notional: Decimal | None = None
    daily_withdraw_cap: Decimal | None = None
    expires_at: dt.datetime | None = None

    def allows_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if not self.ip_allowlist:
            return True
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.ip_allowlist)

    @property
    def is_ip_bound(self) -> bool:
        """True if the key works only from networks its owner names: an allowlist with no entry
        broader than ``MIN_BOUND_PREFIX``. The one rule behind "withdraw needs an IP allowlist"
        and "a trading key without one expires when idle"."""
        return bool(self.ip_allowlist) and all(binds(n) for n in self.ip_allowlist)

    def too_broad(self) -> tuple[IPNetwork, ...]:
        """The allowlist entries that keep the key from counting as IP-bound."""
        return tuple(n for n in self.ip_allowlist if not binds(n))

    def allows_symbol(self, symbol: str) -> bool:
        return not self.symbols or symbol.upper() in self.symbols

    def to_json(self) -> dict[str, object]:
        return {
            "ip_allowlist": [str(n) for n in self.ip_allowlist],
            "symbols": list(self.symbols),
            "max_notional": None if self.max_notional is None else str(self.max_notional),
            "daily_withdraw_cap": None if self.daily_withdraw_cap is None else str(self.daily_withdraw_cap),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
        }

    def replace(self, **changes: object) -> Restrictions:
        return replace(self, **changes)  # type: ignore[arg-type]


def idle_expiry_applies(scopes: Iterable[Scope], r: Restrictions) -> bool:
    """A key that can trade or withdraw and is not bound to an IP expires when idle."""
    return not r.is_ip_bound and bool({Scope.TRADE, Scope.WITHDRAW} & set(scopes))


def usable_scopes(scopes: frozenset[Scope], r: Restrictions) -> frozenset[Scope]:
    """The scopes a key may use now: ``withdraw`` only while the key is IP-bound. New keys and
    changes are refused without the binding; this holds for keys stored before the rule."""
    if Scope.WITHDRAW in scopes and not r.is_ip_bound:
        return scopes - {Scope.WITHDRAW}
    return scopes


@dataclass(frozen=True, slots=True)
class Widening:
    """What a proposed change adds to a key's power; empty means the change only narrows."""

    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasons)


def _covers(old: tuple[IPNetwork, ...], new: tuple[IPNetwork, ...]) -> bool:
    """True if every network in ``new`` lies inside some network of ``old``."""
    return all(any(n.version == o.version and n.subnet_of(o) for o in old) for n in new)  # type: ignore[arg-type]


def widening(
    old_scopes: frozenset[Scope],
    old: Restrictions,
    new_scopes: frozenset[Scope],
    new: Restrictions,
) -> Widening:
    """Every way in which (new_scopes, new) lets a key do more than (old_scopes, old)."""
    reasons = [f"adds scope {s.value}" for s in SCOPE_ORDER if s in new_scopes and s not in old_scopes]
    if old.ip_allowlist and not new.ip_allowlist:
        reasons.append("removes the IP allowlist")
    elif old.ip_allowlist and not _covers(old.ip_allowlist, new.ip_allowlist):
        reasons.append("adds IP addresses")
    if old.symbols and not new.symbols:
        reasons.append("removes the symbol allowlist")
    elif old.symbols and not set(new.symbols) <= set(old.symbols):
        reasons.append("adds symbols")
    for name in ("max_notional", "daily_withdraw_cap"):
        o, n = getattr(old, name), getattr(new, name)
        if o is not None and (n is None or n > o):
            reasons.append(f"raises {name}")
    if old.expires_at is not None and (new.expires_at is None or new.expires_at > old.expires_at):
        reasons.append("extends expiry")
    return Widening(reasons)
