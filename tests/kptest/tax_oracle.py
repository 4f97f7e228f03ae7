"""The reference oracle for the tax engine: the cost-basis rules in exact ``Decimal``.

keyplane's engine (``keyplane.apps.tax.engine``) counts in integers; this is the same set of
rules written the plain way, over ``Decimal`` amounts, with money rounded to ``quantum``. The
property tests compare the two on random ledgers: same disposals, holdings and warnings.


Every trade gives one asset (X) and receives another (Y), worth ``V`` in the report currency Q:
the trade's cost when its quote is Q, else a price from the ledger's own Q-quoted trades. Q itself
is money and has no lots; every other asset has a pool (``pools.py``).

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
"""

from __future__ import annotations

import gc
import heapq
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import NamedTuple, Protocol

from keyplane.apps.money import CONTEXT
from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.model import ZERO, Trade, Transfer

DAY_MS = 86_400_000
MATCH_WINDOW_MS = 7 * DAY_MS
QUANTUM = Decimal("1e-10")


class Lot:
    __slots__ = ("amount", "cost", "id", "original", "ts")

    def __init__(self, id: str, ts: int, amount: Decimal, cost: Decimal) -> None:
        self.id, self.ts, self.amount, self.cost, self.original = id, ts, amount, cost, amount

    def __repr__(self) -> str:
        return f"Lot({self.id!r}, ts={self.ts}, amount={self.amount}, cost={self.cost})"

    def unit_cost(self) -> Decimal:
        return self.cost / self.amount if self.amount else ZERO


class Piece(NamedTuple):
    lot_id: str
    acquired_ts: int
    amount: Decimal
    cost: Decimal


class Pool(Protocol):
    def add(self, lot: Lot) -> None: ...

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        """Pieces covering up to ``amount`` and the shortfall (0 unless the pool ran dry)."""
        ...

    def balance(self) -> Decimal: ...


def _cut(lot: Lot, amount: Decimal) -> Piece:
    """Take ``amount`` (<= lot.amount) out of ``lot``."""
    if amount >= lot.amount:
        piece = Piece(lot.id, lot.ts, lot.amount, lot.cost)
        lot.amount, lot.cost = ZERO, ZERO
        return piece
    cost = (lot.cost * amount / lot.amount).quantize(QUANTUM)
    lot.amount -= amount
    lot.cost -= cost
    return Piece(lot.id, lot.ts, amount, cost)


class FifoPool:
    def __init__(self) -> None:
        self._lots: deque[Lot] = deque()
        self._balance = ZERO

    def add(self, lot: Lot) -> None:
        self._lots.append(lot)
        self._balance += lot.amount

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        return self._take(amount, 0)

    def _take(self, amount: Decimal, end: int) -> tuple[list[Piece], Decimal]:
        # ``_cut`` inlined: this loop runs once per lot used by every disposal. ``end`` is 0 to
        # take from the oldest lot (FIFO), -1 from the newest (LIFO).
        pieces: list[Piece] = []
        left = amount
        lots, new = self._lots, tuple.__new__
        pop = lots.popleft if end == 0 else lots.pop
        while left > 0 and lots:
            lot = lots[end]
            lot_amount = lot.amount
            if left >= lot_amount:
                pieces.append(new(Piece, (lot.id, lot.ts, lot_amount, lot.cost)))
                lot.amount = lot.cost = ZERO
                pop()
                left -= lot_amount
            else:
                cost = (lot.cost * left / lot_amount).quantize(QUANTUM)
                lot.amount = lot_amount - left
                lot.cost -= cost
                pieces.append(new(Piece, (lot.id, lot.ts, left, cost)))
                left = ZERO
        self._balance -= amount - left
        return pieces, left

    def balance(self) -> Decimal:
        return self._balance


class LifoPool(FifoPool):
    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        return self._take(amount, -1)


class HifoPool:
    def __init__(self) -> None:
        self._heap: list[tuple[Decimal, int, Lot]] = []
        self._seq = 0
        self._balance = ZERO

    def add(self, lot: Lot) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (-lot.unit_cost(), self._seq, lot))
        self._balance += lot.amount

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        pieces: list[Piece] = []
        left = amount
        while left > 0 and self._heap:
            lot = self._heap[0][2]
            piece = _cut(lot, left)
            pieces.append(piece)
            left -= piece.amount
            self._balance -= piece.amount
            if lot.amount == 0:
                heapq.heappop(self._heap)
        return pieces, left

    def balance(self) -> Decimal:
        return self._balance


class AveragePool:
    """Average cost: a disposal costs ``total_cost * amount / total_amount``. The lots are kept
    oldest first only to name the units used and to date them for the holding period."""

    def __init__(self) -> None:
        self._lots: deque[Lot] = deque()
        self._amount = ZERO
        self._cost = ZERO

    def add(self, lot: Lot) -> None:
        self._lots.append(lot)
        self._amount += lot.amount
        self._cost += lot.cost

    def take(self, amount: Decimal) -> tuple[list[Piece], Decimal]:
        if self._amount <= 0:
            return [], amount
        used = min(amount, self._amount)
        total = self._cost if used == self._amount else (self._cost * used / self._amount).quantize(QUANTUM)
        self._amount -= used
        self._cost -= total
        pieces: list[Piece] = []
        left, cost_left = used, total
        while left > 0:
            lot = self._lots[0]
            part = min(left, lot.amount)
            cost = cost_left if part == left else (total * part / used).quantize(QUANTUM)
            pieces.append(Piece(lot.id, lot.ts, part, cost))
            lot.amount -= part
            left -= part
            cost_left -= cost
            if lot.amount == 0:
                self._lots.popleft()
        return pieces, amount - used

    def balance(self) -> Decimal:
        return self._amount


POOLS: dict[str, type[FifoPool] | type[HifoPool] | type[AveragePool]] = {
    "fifo": FifoPool,
    "lifo": LifoPool,
    "hifo": HifoPool,
    "average": AveragePool,
}
METHODS = tuple(POOLS)


@dataclass(slots=True)
class Disposal:
    ts: int
    asset: str
    amount: Decimal
    proceeds: Decimal
    cost: Decimal
    gain: Decimal
    term: str  # "short" | "long"
    kind: str  # "trade" | "fee" | "transfer-fee"
    source: str
    ref: str
    lots: list[Piece]
    held_days: int


@dataclass
class Result:
    method: str
    quote: str
    disposals: list[Disposal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    holdings: dict[str, Decimal] = field(default_factory=dict)
    own_transfers: int = 0
    scale: int = 0  # 0: figures are Decimal; else scaled integers (``scaled.py``)


def match_transfers(transfers: Iterable[Transfer]) -> dict[tuple[str, str, str], tuple[str, str, str]]:
    """Pairs (withdrawal -> deposit) of moves between the user's own accounts, by keys
    ``(source, kind, id)``: same txid, else the same asset arriving (amount, or amount less fee)
    in another account within 7 days."""
    items = sorted(transfers, key=lambda t: (t.ts, t.kind, t.id))
    deposits = [t for t in items if t.kind == "deposit"]
    used: set[tuple[str, str, str]] = set()
    pairs: dict[tuple[str, str, str], tuple[str, str, str]] = {}
    for w in (t for t in items if t.kind == "withdrawal"):
        for d in deposits:
            dk = (d.source, d.kind, d.id)
            if dk in used or d.asset != w.asset or d.source == w.source:
                continue
            same_tx = bool(w.txid) and w.txid == d.txid
            near = w.ts - 3_600_000 <= d.ts <= w.ts + MATCH_WINDOW_MS
            if same_tx or (near and d.amount in (w.amount, w.amount - w.fee)):
                used.add(dk)
                pairs[(w.source, w.kind, w.id)] = dk
                break
    return pairs


class Engine:
    def __init__(self, method: str, quote: str = "USDT", long_term_days: int = 365) -> None:
        if method not in POOLS:
            raise TaxError(f"unknown tax method {method!r} (use one of: {', '.join(POOLS)})")
        self.method, self.quote, self.long_ms = method, quote.upper(), long_term_days * DAY_MS
        self.pools: dict[str, Pool] = defaultdict(POOLS[method])
        self.outside: dict[str, deque[Piece]] = defaultdict(deque)
        self.prices: dict[str, tuple[Decimal, Decimal]] = {}
        self.result = Result(method, self.quote)

    # ---- helpers -------------------------------------------------------------------------------

    def value_of(self, asset: str, amount: Decimal) -> Decimal | None:
        if asset == self.quote:
            return amount
        last = self.prices.get(asset)
        if last is None:
            return None
        value, units = last  # the last trade's value and units: the price, divided only when needed
        return amount * value / units

    def acquire(self, asset: str, lot_id: str, ts: int, amount: Decimal, cost: Decimal) -> None:
        if asset != self.quote and amount > 0:
            self.pools[asset].add(Lot(lot_id, ts, amount, cost.quantize(QUANTUM)))

    def dispose(
        self, asset: str, amount: Decimal, proceeds: Decimal, ts: int, kind: str, source: str, ref: str
    ) -> None:
        if asset == self.quote or amount <= 0:
            return
        pieces, short = self.pools[asset].take(amount)
        if short > 0:
            self.result.warnings.append(
                f"{ref}: disposed of {short} {asset} more than the ledger holds; counted at zero cost"
            )
            pieces.append(Piece("unknown", ts, short, ZERO))
        proceeds = proceeds.quantize(QUANTUM)
        long_before = ts - self.long_ms  # acquired before this: held long-term
        if len(pieces) == 1:
            oldest = newest = pieces[0].acquired_ts
        else:
            stamps = [p.acquired_ts for p in pieces]
            oldest, newest = min(stamps), max(stamps)
        if (oldest < long_before) == (newest < long_before):
            # The usual case: one holding period for the whole disposal.
            cost = pieces[0].cost if len(pieces) == 1 else sum([p.cost for p in pieces], ZERO)
            held = (ts - oldest) // DAY_MS
            term = "long" if oldest < long_before else "short"
            self.result.disposals.append(
                Disposal(ts, asset, amount, proceeds, cost, proceeds - cost, term, kind, source, ref, pieces, int(held))
            )
            return
        groups: dict[str, list[Piece]] = {"short": [], "long": []}
        for p in pieces:
            groups["long" if p.acquired_ts < long_before else "short"].append(p)
        parts = [(term, ps) for term, ps in groups.items() if ps]
        left = proceeds
        for i, (term, ps) in enumerate(parts):
            amt = sum((p.amount for p in ps), ZERO)
            share = left if i == len(parts) - 1 else (proceeds * amt / amount).quantize(QUANTUM)
            left -= share
            cost = sum((p.cost for p in ps), ZERO)
            held = (ts - min(p.acquired_ts for p in ps)) // DAY_MS
            self.result.disposals.append(
                Disposal(ts, asset, amt, share, cost, share - cost, term, kind, source, ref, ps, int(held))
            )

    # ---- events --------------------------------------------------------------------------------

    def trade(self, t: Trade) -> None:
        q = self.quote
        ref = f"{t.source}:trade:{t.id}"
        fa = t.fee_asset
        amount, value = t.amount, t.cost
        if (
            t.quote == q
            and t.base != q
            and amount
            and value
            and t.fee_value is None
            and (fa is None or fa in (q, t.base))
        ):
            # The usual trade, against the report currency with its fee (if any) in one of its two
            # assets: the general path below, specialised. A report runs it a million times.
            fee = t.fee
            self.prices[t.base] = (value, amount)
            if t.side == "buy":
                cost = value
                if fee and fa == q:  # a fee in what was given: added to the cost
                    cost += value * fee / value
                elif fee and fa:  # a fee in what was received: fewer units
                    amount -= fee
                if amount > 0:
                    self.pools[t.base].add(Lot(ref, t.ts, amount, cost.quantize(QUANTUM)))
            else:
                proceeds = value
                if fee and fa == q:  # a fee in what was received: deducted from the proceeds
                    proceeds -= value * fee / value
                elif fee and fa:  # a fee in what was given: sold along with it, for no proceeds
                    amount += fee
                self.dispose(t.base, amount, proceeds, t.ts, "trade", t.source, ref)
            return
        if t.quote == q:
            value = t.cost
            if t.amount:
                self.prices[t.base] = (t.cost, t.amount)
        elif t.base == q:
            value = t.amount
            if t.cost:
                self.prices[t.quote] = (t.amount, t.cost)
        else:
            found = self.value_of(t.quote, t.cost)
            if found is None:
                found = self.value_of(t.base, t.amount)
            if found is None:
                self.result.warnings.append(f"{ref}: no {q} price for {t.base} or {t.quote}; valued at 0")
                found = ZERO
            value = found
            if t.amount:
                self.prices[t.base] = (value, t.amount)
        if t.side == "buy":
            give, give_amt, get, get_amt = t.quote, t.cost, t.base, t.amount
        else:
            give, give_amt, get, get_amt = t.base, t.amount, t.quote, t.cost
        fee, fa = t.fee, t.fee_asset
        fee_value = ZERO
        if fee and fa:
            if t.fee_value is not None:
                fee_value = t.fee_value
            elif fa == give and give_amt:
                fee_value = value * fee / give_amt
            elif fa == get and get_amt:
                fee_value = value * fee / get_amt
            else:
                known = self.value_of(fa, fee)
                if known is None:
                    self.result.warnings.append(f"{ref}: no {q} price for the fee asset {fa}; fee valued at 0")
                fee_value = known or ZERO
        proceeds, cost = value, value
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
            self.dispose(fa, fee, fee_value, t.ts, "fee", t.source, ref)
            if get != q:
                cost += fee_value
            else:
                proceeds -= fee_value
        self.dispose(give, give_amt, proceeds, t.ts, "trade", t.source, ref)
        self.acquire(get, ref, t.ts, get_amt, cost)

    def own_withdrawal(self, w: Transfer) -> None:
        self.result.own_transfers += 1
        self.dispose(w.asset, w.fee, ZERO, w.ts, "transfer-fee", w.source, f"{w.source}:withdrawal:{w.id}")

    def withdrawal(self, w: Transfer) -> None:
        if w.asset == self.quote:
            return
        pieces, _short = self.pools[w.asset].take(w.amount)
        self.outside[w.asset].extend(pieces)

    def deposit(self, d: Transfer) -> None:
        if d.asset == self.quote:
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
                cost = (p.cost * left / p.amount).quantize(QUANTUM)
                back[0] = Piece(p.lot_id, p.acquired_ts, p.amount - left, p.cost - cost)
                pool.add(Lot(p.lot_id, p.acquired_ts, left, cost))
                left = ZERO
        if left > 0:
            value = self.value_of(d.asset, left)
            if value is None:
                self.result.warnings.append(
                    f"{d.source}:deposit:{d.id}: {left} {d.asset} arrived with no known cost; counted at zero cost"
                )
            self.acquire(d.asset, f"{d.source}:deposit:{d.id}", d.ts, left, value or ZERO)


def compute(
    trades: Iterable[Trade],
    transfers: Iterable[Transfer] = (),
    *,
    method: str = "fifo",
    quote: str = "USDT",
    long_term_days: int = 365,
    places: int = 10,
) -> Result:
    """Run every event in time order through ``method``, money rounded to ``places`` decimals;
    raises ``TaxError`` for an unknown method."""
    global QUANTUM
    engine = Engine(method, quote, long_term_days)
    saved, QUANTUM = QUANTUM, Decimal(1).scaleb(-places)
    try:
        with paused_gc():
            return _run(engine, trades, transfers)
    finally:
        QUANTUM = saved


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


def _run(engine: Engine, trades: Iterable[Trade], transfers: Iterable[Transfer]) -> Result:
    transfers = list(transfers)
    pairs = match_transfers(transfers)
    matched_deposits = set(pairs.values())
    trades = trades if isinstance(trades, list) else list(trades)
    ordered: Iterable[Trade | Transfer]
    if not transfers and all(a.ts <= b.ts for a, b in pairwise(trades)):
        ordered = trades  # the ledger's order already: no need to build and sort a million tuples
    else:
        # Stable sort: events at the same ms keep the ledger's order; deposits first, withdrawals last.
        events: list[tuple[int, int, Trade | Transfer]] = [(t.ts, 1, t) for t in trades]
        events += [(t.ts, 0 if t.kind == "deposit" else 2, t) for t in transfers]
        events.sort(key=lambda e: (e[0], e[1]))
        ordered = [e[2] for e in events]
    with localcontext(CONTEXT):
        for ev in ordered:
            if isinstance(ev, Trade):
                engine.trade(ev)
            elif ev.kind == "withdrawal":
                if (ev.source, ev.kind, ev.id) in pairs:
                    engine.own_withdrawal(ev)
                else:
                    engine.withdrawal(ev)
            elif (ev.source, ev.kind, ev.id) not in matched_deposits:
                engine.deposit(ev)
    engine.result.holdings = {a: p.balance() for a, p in engine.pools.items() if p.balance()}
    return engine.result
