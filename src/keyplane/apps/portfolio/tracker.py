"""Balances across every profile, valued in one quote currency, with history in SQLite.

For each profile: ``fetch_balance`` (total = free + locked), then a price for each asset from the
same exchange's tickers: ``ASSET/QUOTE`` last price, or ``1 / QUOTE/ASSET``, or through USDT
(``ASSET/USDT`` x ``USDT/QUOTE``). An asset with no price is listed with no value and named in the
warnings, never silently counted as zero. A quote currency that no market of the exchange trades
(a fiat currency on a crypto exchange) could value nothing, so it is refused (``QuoteNotTraded``).

A profile that cannot be read (unreachable, key revoked, ...) does not stop the others: the
snapshot names it in ``failures``, and a snapshot with failures is incomplete (its total leaves
that account out), so the commands show it but do not store it in the history.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

from keyplane.apps.money import CONTEXT
from keyplane.client.ccxt_errors import translate
from keyplane.client.errors import ClientError
from keyplane.client.profile import Profile

ZERO = Decimal(0)


class QuoteNotTraded(ClientError):
    """The quote currency is not traded on the profile's exchange: nothing can be valued in it."""


@dataclass(frozen=True)
class Holding:
    profile: str
    exchange: str
    asset: str
    amount: Decimal
    price: Decimal | None
    value: Decimal | None


@dataclass
class Snapshot:
    ts: int
    quote: str
    holdings: list[Holding] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # "<profile>: <why>", one per profile that failed

    @property
    def total(self) -> Decimal:
        return sum((h.value for h in self.holdings if h.value is not None), ZERO)

    def by_asset(self) -> dict[str, tuple[Decimal, Decimal]]:
        """asset -> (amount, value)"""
        out: dict[str, tuple[Decimal, Decimal]] = {}
        for h in self.holdings:
            a, v = out.get(h.asset, (ZERO, ZERO))
            out[h.asset] = (a + h.amount, v + (h.value or ZERO))
        return dict(sorted(out.items(), key=lambda kv: -kv[1][1]))

    def by_profile(self) -> dict[str, Decimal]:
        out: dict[str, Decimal] = {}
        for h in self.holdings:
            key = f"{h.profile} ({h.exchange})"
            out[key] = out.get(key, ZERO) + (h.value or ZERO)
        return out

    def allocation(self) -> dict[str, Decimal]:
        """asset -> percent of the total value, to 0.01."""
        total = self.total
        if not total:
            return {}
        with localcontext(CONTEXT):
            return {a: (v * 100 / total).quantize(Decimal("0.01")) for a, (_, v) in self.by_asset().items() if v}


def _dec(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    return Decimal(value if isinstance(value, str) else repr(value))


def _price(tickers: dict[str, Any], asset: str, quote: str) -> Decimal | None:
    if asset == quote:
        return Decimal(1)

    def last(symbol: str) -> Decimal | None:
        t = tickers.get(symbol)
        if not t:
            return None
        info = t.get("info") or {}
        return _dec(info.get("lastPrice") or info.get("price")) or _dec(t.get("last") or t.get("close"))

    direct = last(f"{asset}/{quote}")
    if direct:
        return direct
    inverse = last(f"{quote}/{asset}")
    if inverse:
        return Decimal(1) / inverse
    if "USDT" not in (asset, quote):
        via, hop = _price(tickers, asset, "USDT"), _price(tickers, "USDT", quote)
        if via and hop:
            return via * hop
    return None


def holdings_for(profile: Profile, exchange: Any, quote: str) -> tuple[list[Holding], list[str]]:
    """One profile's balances and their values. Raises a ``ClientError`` (translated from ccxt)."""
    try:
        exchange.load_markets()
        balance = exchange.fetch_balance()
    except Exception as e:
        raise translate(e, exchange) from None
    traded = {c for m in (exchange.markets or {}).values() for c in (m.get("base"), m.get("quote"))}
    if quote not in traded:
        known = sorted(c for c in traded if c)
        listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        raise QuoteNotTraded(
            f"{quote} is not traded on {profile.exchange} (profile {profile.name}), so nothing can be valued "
            f"in it (valuation in a currency without markets, such as a fiat currency, is not supported yet); "
            f"use one of: {listed}"
        )
    amounts: dict[str, Decimal] = {}
    for row in (balance.get("info") or {}).get("balances") or []:
        total = (_dec(row.get("free")) or ZERO) + (_dec(row.get("locked")) or ZERO)
        if total:
            amounts[row["asset"]] = total
    if not amounts:
        for asset, value in (balance.get("total") or {}).items():
            if value:
                amounts[asset] = _dec(value) or ZERO
    pairs = [*((a, quote) for a in amounts), *((quote, a) for a in amounts), *((a, "USDT") for a in amounts)]
    if quote != "USDT":
        pairs.append(("USDT", quote))
    symbols = [s for s in (f"{b}/{q}" for b, q in pairs) if s in exchange.markets]
    tickers: dict[str, Any] = {}
    try:
        for symbol in dict.fromkeys(symbols):
            tickers[symbol] = exchange.fetch_ticker(symbol)
    except Exception as e:
        raise translate(e, exchange) from None
    out: list[Holding] = []
    warnings: list[str] = []
    for asset, amount in sorted(amounts.items()):
        price = _price(tickers, asset, quote)
        if price is None:
            warnings.append(f"{profile.name}: no {quote} price for {asset}; left out of the total")
        with localcontext(CONTEXT):
            value = None if price is None else (amount * price).quantize(Decimal("1e-8"))
        out.append(Holding(profile.name, profile.exchange, asset, amount, price, value))
    return out, warnings


def snapshot(
    profiles: Iterable[Profile],
    make_exchange: Callable[[Profile], Any],
    quote: str = "USDT",
    *,
    now: Callable[[], float] = time.time,
) -> Snapshot:
    """Every profile's holdings now. A profile that fails with a ``ClientError`` is named in
    ``failures`` and the others are still read; ``QuoteNotTraded`` (bad input, not a failing
    account) is raised."""
    snap = Snapshot(int(now() * 1000), quote.upper())
    for profile in profiles:
        try:
            holdings, warnings = holdings_for(profile, make_exchange(profile), snap.quote)
        except QuoteNotTraded:
            raise
        except ClientError as e:
            snap.failures.append(f"{profile.name}: {e}")
            continue
        snap.holdings.extend(holdings)
        snap.warnings.extend(warnings)
    return snap


class SnapshotStore:
    """Snapshots in a local SQLite file, so history builds up run after run."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS snapshots (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, quote TEXT NOT NULL,
                total TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS holdings (snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
                profile TEXT NOT NULL, exchange TEXT NOT NULL, asset TEXT NOT NULL, amount TEXT NOT NULL,
                price TEXT, value TEXT);
            """
        )

    def close(self) -> None:
        self._db.close()

    def save(self, snap: Snapshot) -> int:
        """Store a complete snapshot; raises ``ValueError`` for one with failures (its total would
        show as a fall in the history)."""
        if snap.failures:
            raise ValueError("an incomplete snapshot is not stored")
        self._db.execute("BEGIN IMMEDIATE")
        with self._db:  # commits, or rolls back on an exception
            cur = self._db.execute(
                "INSERT INTO snapshots (ts, quote, total) VALUES (?,?,?)", (snap.ts, snap.quote, str(snap.total))
            )
            sid = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO holdings VALUES (?,?,?,?,?,?,?)",
                [(sid, h.profile, h.exchange, h.asset, str(h.amount), _s(h.price), _s(h.value)) for h in snap.holdings],
            )
        return sid

    def history(self, quote: str) -> list[tuple[int, Decimal]]:
        rows = self._db.execute("SELECT ts, total FROM snapshots WHERE quote=? ORDER BY ts", (quote.upper(),))
        return [(int(ts), Decimal(total)) for ts, total in rows]

    def latest(self, quote: str) -> Snapshot | None:
        row = self._db.execute(
            "SELECT id, ts FROM snapshots WHERE quote=? ORDER BY ts DESC, id DESC LIMIT 1", (quote.upper(),)
        ).fetchone()
        if row is None:
            return None
        snap = Snapshot(int(row[1]), quote.upper())
        for p, ex, a, amount, price, value in self._db.execute(
            "SELECT profile, exchange, asset, amount, price, value FROM holdings WHERE snapshot_id=?", (row[0],)
        ):
            snap.holdings.append(Holding(p, ex, a, Decimal(amount), _dec(price), _dec(value)))
        return snap


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
