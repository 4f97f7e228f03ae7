"""What each event is worth in the report currency: the rows the engine reads, how a trade is
valued, and the first pass that resolves, in ledger order, every value that needs another asset's
price (``resolve``).

A trade against the report currency Q (or with Q as its base) is worth its own Q amount: no
price is needed. A crypto-to-crypto trade, a fee in a third asset and an unmatched deposit are
valued at the last price the ledger's own trades give the asset: ``(value, units)`` of its latest
trade, divided only when needed. Those values do not depend on any pool, so they are resolved
once, before the pools run (in one process or in several).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import NamedTuple

from keyplane.apps.money import CONTEXT
from keyplane.apps.tax.pools import Number


class Row(NamedTuple):
    """A trade, amounts as scaled integers; ``key`` orders the ledger's events, ``ref`` is
    ``<source>:trade:<id>``, which names the trade's lot and disposals."""

    key: int
    source: str
    ref: str
    ts: int
    base: str
    quote: str
    side: str
    amount: int
    cost: int
    fee: int
    fee_asset: str | None
    fee_value: int | None


class TransferRow(NamedTuple):
    key: int
    source: str
    id: str
    kind: str
    ts: int
    asset: str
    amount: int
    fee: int
    txid: str | None
    address: str | None


class NeedsPrices(Exception):
    """An event needs another asset's price, and the engine was given none (``resolve``)."""


Price = tuple[Number, Number]  # (value, units) of an asset's latest trade
Warn = Callable[[str], None]


@dataclass
class Resolved:
    """The first pass's findings: the values of the trades that read a price (by key), the price
    of each unmatched deposit's asset at its time (None: unknown), and the warnings on prices."""

    values: dict[int, tuple[Number, Number]] = field(default_factory=dict)
    deposits: dict[int, Price | None] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    warning_keys: list[int] = field(default_factory=list)


def value_of(prices: dict[str, Price] | None, quote: str, asset: str, amount: Number) -> Number | None:
    if asset == quote:
        return amount
    if prices is None:
        raise NeedsPrices
    last = prices.get(asset)
    if last is None:
        return None
    value, units = last
    return Decimal(amount) * value / units


def sides(t: Row) -> tuple[str, int, str, int]:
    """``(asset given, amount given, asset received, amount received)`` of a trade."""
    if t.side == "buy":
        return t.quote, t.cost, t.base, t.amount
    return t.base, t.amount, t.quote, t.cost


def valuation(t: Row, quote: str, prices: dict[str, Price] | None, warn: Warn | None = None) -> tuple[Number, Number]:
    """``(value, fee value)`` of the trade in ``quote``; with ``prices`` None, raises
    ``NeedsPrices`` if they need a price. Warns of what no price values (counted as 0)."""
    q = quote
    value: Number
    if t.quote == q:
        value = t.cost
    elif t.base == q:
        value = t.amount
    else:
        found = value_of(prices, q, t.quote, t.cost)
        if found is None:
            found = value_of(prices, q, t.base, t.amount)
        if found is None:
            if warn:
                warn(f"{t.ref}: no {q} price for {t.base} or {t.quote}; valued at 0")
            found = 0
        value = found
    give, give_amt, get, get_amt = sides(t)
    fee, fa = t.fee, t.fee_asset
    if not (fee and fa):
        return value, 0
    if t.fee_value is not None:
        return value, t.fee_value
    if fa == give and give_amt:
        return value, Decimal(value) * fee / give_amt
    if fa == get and get_amt:
        return value, Decimal(value) * fee / get_amt
    known = value_of(prices, q, fa, fee)
    if known is None and warn:
        warn(f"{t.ref}: no {q} price for the fee asset {fa}; fee valued at 0")
    return value, known or 0


def resolve(events: Iterable[Row | TransferRow], quote: str, matched_deposits: set[int]) -> Resolved:
    """Walk every event in key order, following each asset's latest price, and keep the values
    that need one (see ``Resolved``)."""
    found = Resolved()
    prices: dict[str, Price] = {}
    q = quote
    key = 0

    def warn(message: str) -> None:
        found.warnings.append(message)
        found.warning_keys.append(4 * key)

    with localcontext(CONTEXT):
        for ev in events:
            key = ev.key
            if type(ev) is not Row:
                if ev.kind == "deposit" and key not in matched_deposits:  # type: ignore[union-attr]
                    found.deposits[key] = prices.get(ev.asset)  # type: ignore[union-attr]
                continue
            try:
                value: Number = valuation(ev, q, None)[0]
            except NeedsPrices:
                found.values[key] = valuation(ev, q, prices, warn)
                value = found.values[key][0]
            if ev.quote == q:
                if ev.amount:
                    prices[ev.base] = (ev.cost, ev.amount)
            elif ev.base == q:
                if ev.cost:
                    prices[ev.quote] = (ev.amount, ev.cost)
            elif ev.amount:
                prices[ev.base] = (value, ev.amount)
    return found
