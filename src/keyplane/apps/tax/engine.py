"""Realised gains from a ledger of trades and transfers, over scaled integers (``figures.py``).

Every trade gives one asset (X) and receives another (Y), worth ``V`` in the report currency Q:
the trade's cost when its quote is Q, else a price from the ledger's own Q-quoted trades
(``prices.py``). Q itself is money and has no lots; every other asset has a pool (``pools.py``).

Fees:
- a buy's fee is added to the cost of what was bought (a fee in the bought asset instead reduces
  the units received);
- a sell's fee is deducted from the proceeds (a fee in the sold asset is sold along with it, for
  no proceeds);
- a fee in a third asset is also a disposal of that asset, for proceeds equal to its value.

Transfers: a withdrawal matched by a deposit of the same asset into another of the user's
accounts (same txid, or the amount less the fee arriving within 7 days) is a transfer between own
accounts, not a disposal; only its network fee is disposed of, for no proceeds. An unmatched
withdrawal moves its lots out of the pools (not a disposal: it may be the user's own wallet); a
later unmatched deposit brings those lots back first, then adds a lot at the market value, or at
zero cost with a warning when no price is known.

A disposal row is split by holding period: ``long`` when held more than ``long_term_days``.
For each row ``gain == proceeds - cost`` exactly.

Values never depend on the pools, so an engine can run the pools of some assets only (``mine``):
given the values that need other assets' prices (``prices.resolve``), each asset's disposals are
the same as in an engine that runs them all. Every disposal and warning carries a key, from its
event's place in the ledger (``4 * key + 2``; a fee disposal ``+ 1``, a warning on prices ``+ 0``),
so that the results of several engines merge into the order one engine gives.
"""

from __future__ import annotations

import gc
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, localcontext

from keyplane.apps.money import CONTEXT
from keyplane.apps.tax.figures import text
from keyplane.apps.tax.pools import EXACT, POOLS, Lot, Number, Piece, Pool, rnd, share
from keyplane.apps.tax.prices import NeedsPrices, Resolved, Row, TransferRow, sides, valuation

DAY_MS = 86_400_000
MATCH_WINDOW_MS = 7 * DAY_MS


class TaxError(Exception):
    pass


@dataclass(slots=True)
class Disposal:
    ts: int
    asset: str
    amount: int
    proceeds: int
    cost: int
    gain: int
    term: str  # "short" | "long"
    kind: str  # "trade" | "fee" | "transfer-fee"
    source: str
    ref: str
    lots: list[Piece]
    held_days: int


@dataclass
class Result:
    """What an engine found, figures in units of ``10**-scale``; each list in its keys' order."""

    method: str
    quote: str
    scale: int
    disposals: list[Disposal] = field(default_factory=list)
    disposal_keys: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    warning_keys: list[int] = field(default_factory=list)
    holdings: dict[str, int] = field(default_factory=dict)
    own_transfers: int = 0


def check_method(method: str) -> None:
    if method not in POOLS:
        raise TaxError(f"unknown tax method {method!r} (use one of: {', '.join(POOLS)})")


Pairs = dict[int, int]  # the key of a withdrawal -> that of the deposit that matches it


def match_transfers(transfers: Iterable[TransferRow]) -> Pairs:
    """The moves between the user's own accounts: same txid, else the same asset arriving
    (amount, or amount less fee) in another account within 7 days."""
    items = sorted(transfers, key=lambda t: (t.ts, t.kind, t.id))
    deposits = [t for t in items if t.kind == "deposit"]
    used: set[int] = set()
    pairs: Pairs = {}
    for w in (t for t in items if t.kind == "withdrawal"):
        for d in deposits:
            if d.key in used or d.asset != w.asset or d.source == w.source:
                continue
            same_tx = bool(w.txid) and w.txid == d.txid
            near = w.ts - 3_600_000 <= d.ts <= w.ts + MATCH_WINDOW_MS
            if same_tx or (near and d.amount in (w.amount, w.amount - w.fee)):
                used.add(d.key)
                pairs[w.key] = d.key
                break
    return pairs


@contextmanager
def paused_gc() -> Iterator[None]:
    """A report holds millions of small objects that live until the end: the cyclic collector would
    rescan them again and again for nothing (they form no cycles), so it is paused meanwhile."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Engine:
    def __init__(
        self,
        method: str,
        quote: str,
        long_term_days: int,
        scale: int,
        resolved: Resolved | None = None,
        mine: frozenset[str] | None = None,
    ) -> None:
        check_method(method)
        self.quote, self.long_ms, self.scale = quote.upper(), long_term_days * DAY_MS, scale
        self.pools: dict[str, Pool] = defaultdict(POOLS[method])
        self.outside: dict[str, deque[Piece]] = defaultdict(deque)
        self.resolved = resolved  # values that read prices; None: no event may read one
        self.mine = mine  # the assets whose pools this engine runs; None: every asset
        self.result = Result(method, self.quote, scale)

    def warn(self, message: str, key: int) -> None:
        self.result.warnings.append(message)
        self.result.warning_keys.append(key)

    def acquire(self, asset: str, lot_id: str, ts: int, amount: int, cost: Number) -> None:
        if asset != self.quote and amount > 0 and (self.mine is None or asset in self.mine):
            self.pools[asset].add(Lot(lot_id, ts, amount, rnd(cost)))

    def dispose(
        self, asset: str, amount: int, proceeds: Number, ts: int, kind: str, source: str, ref: str, key: int
    ) -> None:
        if asset == self.quote or amount <= 0 or (self.mine is not None and asset not in self.mine):
            return
        pieces, short = self.pools[asset].take(amount)
        if short > 0:
            units = text(short, self.scale)
            self.warn(f"{ref}: disposed of {units} {asset} more than the ledger holds; counted at zero cost", key)
            pieces.append(Piece("unknown", ts, short, 0))
        p = proceeds if type(proceeds) is int else rnd(proceeds)
        long_before = ts - self.long_ms  # acquired before this: held long-term
        if len(pieces) == 1:
            oldest = newest = pieces[0].acquired_ts
        else:
            stamps = [x.acquired_ts for x in pieces]
            oldest, newest = min(stamps), max(stamps)
        out, keys = self.result.disposals, self.result.disposal_keys
        if (oldest < long_before) == (newest < long_before):  # the usual case: one holding period
            cost = pieces[0].cost if len(pieces) == 1 else sum([x.cost for x in pieces])
            term = "long" if oldest < long_before else "short"
            days = (ts - oldest) // DAY_MS
            out.append(Disposal(ts, asset, amount, p, cost, p - cost, term, kind, source, ref, pieces, days))
            keys.append(key)
            return
        groups: dict[str, list[Piece]] = {"short": [], "long": []}
        for x in pieces:
            groups["long" if x.acquired_ts < long_before else "short"].append(x)
        parts = [(term, ps) for term, ps in groups.items() if ps]
        left = p
        for i, (term, ps) in enumerate(parts):
            amt = sum(x.amount for x in ps)
            part = left if i == len(parts) - 1 else share(p, amt, amount)
            left -= part
            cost = sum(x.cost for x in ps)
            held = (ts - min(x.acquired_ts for x in ps)) // DAY_MS
            out.append(Disposal(ts, asset, amt, part, cost, part - cost, term, kind, source, ref, ps, held))
            keys.append(key)

    def trade(self, t: Row) -> None:
        """Any trade (``run`` takes the usual one, against the report currency, on a fast path)."""
        q = self.quote
        found = None if self.resolved is None else self.resolved.values.get(t.key)
        value, fee_value = valuation(t, q, None) if found is None else found
        give, give_amt, get, get_amt = sides(t)
        fee, fa = t.fee, t.fee_asset
        proceeds: Number = value
        cost: Number = value
        if fee and fa == get:
            get_amt -= fee
            if get == q:
                proceeds -= fee_value
        elif fee and fa == give:
            give_amt += fee
            if give == q:
                cost += fee_value
            elif get != q:
                proceeds += fee_value
                cost += fee_value
        elif fee and fa:
            self.dispose(fa, fee, fee_value, t.ts, "fee", t.source, t.ref, 4 * t.key + 1)
            if get != q:
                cost += fee_value
            else:
                proceeds -= fee_value
        self.dispose(give, give_amt, proceeds, t.ts, "trade", t.source, t.ref, 4 * t.key + 2)
        self.acquire(get, t.ref, t.ts, get_amt, cost)

    def own_withdrawal(self, w: TransferRow) -> None:
        self.dispose(w.asset, w.fee, 0, w.ts, "transfer-fee", w.source, f"{w.source}:withdrawal:{w.id}", 4 * w.key + 2)

    def withdrawal(self, w: TransferRow) -> None:
        if w.asset == self.quote or (self.mine is not None and w.asset not in self.mine):
            return
        pieces, _short = self.pools[w.asset].take(w.amount)
        self.outside[w.asset].extend(pieces)

    def deposit(self, d: TransferRow) -> None:
        if d.asset == self.quote or (self.mine is not None and d.asset not in self.mine):
            return
        left = d.amount
        back = self.outside[d.asset]
        pool = self.pools[d.asset]
        while left > 0 and back:
            p = back[0]
            if p.amount <= left:
                back.popleft()
                pool.add(Lot(p.lot_id, p.acquired_ts, p.amount, p.cost))
                left -= p.amount
            else:
                cost = share(p.cost, left, p.amount)
                back[0] = Piece(p.lot_id, p.acquired_ts, p.amount - left, p.cost - cost)
                pool.add(Lot(p.lot_id, p.acquired_ts, left, cost))
                left = 0
        if left > 0:
            if self.resolved is None:
                raise NeedsPrices
            price = self.resolved.deposits.get(d.key)
            ref = f"{d.source}:deposit:{d.id}"
            if price is None:
                units = text(left, self.scale)
                self.warn(f"{ref}: {units} {d.asset} arrived with no known cost; counted at zero cost", 4 * d.key + 2)
            value: Number = 0 if price is None else Decimal(left) * price[0] / price[1]
            self.acquire(d.asset, ref, d.ts, left, value)


def run(engine: Engine, events: Iterable[Row | TransferRow], pairs: Pairs) -> Result:
    """Run the events (in key order) through ``engine``; returns its result, holdings filled in.
    Raises ``NeedsPrices`` if an event needs a price that ``engine.resolved`` does not hold."""
    matched = set(pairs.values())
    q, mine, pools, dispose, trade = engine.quote, engine.mine, engine.pools, engine.dispose, engine.trade
    with localcontext(CONTEXT):
        for ev in events:
            if type(ev) is not Row:
                if ev.kind == "withdrawal":  # type: ignore[union-attr]
                    if ev.key in pairs:
                        engine.own_withdrawal(ev)  # type: ignore[arg-type]
                    else:
                        engine.withdrawal(ev)  # type: ignore[arg-type]
                elif ev.key not in matched:
                    engine.deposit(ev)  # type: ignore[arg-type]
                continue
            key, source, ref, ts, base, quote, side, amount, value, fee, fa, fee_value = ev
            if quote != q or base == q or not (amount and value) or fee_value is not None or fa not in (None, q, base):
                trade(ev)
                continue
            # The usual trade, against the report currency with its fee (if any) in one of its two
            # assets: ``Engine.trade`` specialised, as a report runs it a million times.
            if mine is not None and base not in mine:
                continue
            if side == "buy":
                cost: Number = value
                if fee and fa == q:  # a fee in what was given, added to the cost: ``value * fee / value``
                    cost += fee if 0 <= value * fee < EXACT else Decimal(value) * fee / value
                elif fee and fa:  # a fee in what was received: fewer units
                    amount -= fee
                if amount > 0:
                    pools[base].add(Lot(ref, ts, amount, cost if type(cost) is int else rnd(cost)))
            else:
                proceeds: Number = value
                if fee and fa == q:  # a fee in what was received: deducted from the proceeds
                    proceeds -= fee if 0 <= value * fee < EXACT else Decimal(value) * fee / value
                elif fee and fa:  # a fee in what was given: sold along with it, for no proceeds
                    amount += fee
                dispose(base, amount, proceeds, ts, "trade", source, ref, 4 * key + 2)
    result = engine.result
    result.holdings = {a: p.balance() for a, p in engine.pools.items() if p.balance()}
    if engine.mine is None:
        result.own_transfers = len(pairs)
    return result


def merged(items: list[list[str]], keys: list[list[int]]) -> list[str]:
    """The items of every list (each in key order) in key order; earlier lists first on equal keys."""
    every_key = [k for ks in keys for k in ks]
    every_item = [x for xs in items for x in xs]
    order = sorted(range(len(every_key)), key=every_key.__getitem__)  # stable; sorted runs: merges only
    return list(map(every_item.__getitem__, order))
