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
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from keyplane.keys.errors import InvalidRestriction

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as e:
        raise InvalidRestriction(f"{name} must be a number, got {value!r}", field=name) from e
    if not amount.is_finite() or amount <= 0:
        raise InvalidRestriction(f"{name} must be a positive number, got {value!r}", field=name)
    return amount.normalize() if amount == amount.to_integral() else amount


_DURATION_RE = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """``30d``, ``24h``, ``90m``, ``1w2d``: a positive duration. Bare numbers are seconds."""
    raw = text.strip().lower()
    if raw.isdigit():
        return dt.timedelta(seconds=int(raw))
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(raw):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(raw) or not raw:
        raise InvalidRestriction(f"{text!r} is not a duration such as 30d, 24h or 90m", field="duration")
    return dt.timedelta(seconds=total)


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
