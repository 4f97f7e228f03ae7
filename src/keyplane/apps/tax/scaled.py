"""The cost-basis engine over scaled integers: every amount is an ``int`` counting units of
``10**-SCALE`` (``SCALE`` = 10, the money quantum of ``pools.QUANTUM``).

It is ``engine.Engine`` step for step, with the same results: additions, subtractions and
comparisons of scaled integers are exact, and every rounding step (a share of a lot's cost, an
average cost, a value from a price) is the ``Decimal`` engine's own, in its 50-digit context:

- ``share(x, part, whole)`` is ``(x * part / whole).quantize(QUANTUM)``: for a product below
  ``10**49`` the 50-digit quotient cannot fall on the other side of a half, so one integer
  division rounding half to even gives the same result; a larger product goes through ``Decimal``;
- a value from a price (``value_of``, a fee's value) is computed in ``Decimal`` on the scaled
  figures, and rounded to an integer where the ``Decimal`` engine quantizes. ``Decimal`` rounds to
  significant digits, so scaling every figure by ``10**SCALE`` changes none of its results.

So a ledger whose amounts all have at most ``SCALE`` decimals (and are below ``10**40``, so that
the ``Decimal`` engine's own sums stay exact) gives the same disposals, holdings and warnings here
as in ``engine.compute`` (warnings write amounts without trailing zeros); ``reporter.make`` sends any other ledger to
``engine.compute``. Loading needs no ``Decimal`` parsing (the ledger stores these integers) and
the pools do integer arithmetic.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import NamedTuple, Protocol

from keyplane.apps.money import CONTEXT
from keyplane.apps.tax.engine import DAY_MS, Disposal, Result, TaxError, match_transfers, paused_gc

SCALE = 10
ONE = 10**SCALE  # 1 unit, scaled
_EXACT = 10**49  # below this, a 50-digit quotient rounds like the exact one (see the docstring)
_D1 = Decimal(1)

Number = int | Decimal  # a scaled figure: an int, or a Decimal between two roundings


class Row(NamedTuple):
    """A trade as the ledger stores it, amounts as scaled integers; ``ref`` is
    ``<source>:trade:<id>``, which names the trade's lot and disposals."""

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
    source: str
    id: str
    kind: str
    ts: int
    asset: str
    amount: int
    fee: int
    txid: str | None
    address: str | None


def rnd(x: Number) -> int:
    """``x.quantize(QUANTUM)`` in scaled units: the nearest integer, half to even."""
    if type(x) is int:
        return x
    return int(Decimal(x).quantize(_D1))


def share(x: int, part: int, whole: int) -> int:
    """``(x * part / whole).quantize(QUANTUM)`` as the ``Decimal`` engine computes it."""
    n = x * part
    if 0 <= n < _EXACT and whole > 0:
        q, r = divmod(n, whole)
        r += r
        if r > whole or (r == whole and q & 1):
            q += 1
        return q
    return int((Decimal(x) * part / whole).quantize(_D1))


def text(x: Number) -> str:
    """A scaled figure as a plain decimal string (no exponent, no trailing zeros)."""
    if type(x) is not int:
        x = Decimal(x).scaleb(-SCALE)
        s = f"{x:f}"
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s if s not in ("", "-0") else "0"
    if x < 0:
        return "-" + text(-x)
    q, r = divmod(x, ONE)
    return f"{q}.{r:010d}".rstrip("0") if r else str(q)


def to_decimal(x: int) -> Decimal:
    """A scaled integer as the exact ``Decimal`` it stands for, without trailing zeros."""
    q, r = divmod(abs(x), ONE)
    if not r:
        return Decimal(-q if x < 0 else q)
    return Decimal(f"{'-' if x < 0 else ''}{q}.{r:010d}".rstrip("0"))


class Lot:
    __slots__ = ("amount", "cost", "id", "ts")

    def __init__(self, id: str, ts: int, amount: int, cost: int) -> None:
        self.id, self.ts, self.amount, self.cost = id, ts, amount, cost


class Piece(NamedTuple):
    lot_id: str
    acquired_ts: int
    amount: int
    cost: int


class Pool(Protocol):
    def add(self, lot: Lot) -> None: ...

    def take(self, amount: int) -> tuple[list[Piece], int]: ...

    def balance(self) -> int: ...


class FifoPool:
    def __init__(self) -> None:
        self._lots: deque[Lot] = deque()
        self._balance = 0

    def add(self, lot: Lot) -> None:
        self._lots.append(lot)
        self._balance += lot.amount

    def take(self, amount: int) -> tuple[list[Piece], int]:
        return self._take(amount, 0)

    def _take(self, amount: int, end: int) -> tuple[list[Piece], int]:
        pieces: list[Piece] = []
        left = amount
        lots, new = self._lots, tuple.__new__
        pop = lots.popleft if end == 0 else lots.pop
        while left > 0 and lots:
            lot = lots[end]
            lot_amount = lot.amount
            if left >= lot_amount:
                pieces.append(new(Piece, (lot.id, lot.ts, lot_amount, lot.cost)))
                pop()
                left -= lot_amount
            else:
                lot_cost = lot.cost
                n = lot_cost * left  # share(lot_cost, left, lot_amount), inlined
                if 0 <= n < _EXACT:
                    cost, r = divmod(n, lot_amount)
                    r += r
                    if r > lot_amount or (r == lot_amount and cost & 1):
                        cost += 1
                else:
                    cost = share(lot_cost, left, lot_amount)
                lot.amount = lot_amount - left
                lot.cost = lot_cost - cost
                pieces.append(new(Piece, (lot.id, lot.ts, left, cost)))
                left = 0
        self._balance -= amount - left
        return pieces, left

    def balance(self) -> int:
        return self._balance


class LifoPool(FifoPool):
    def take(self, amount: int) -> tuple[list[Piece], int]:
        return self._take(amount, -1)


def _cut(lot: Lot, amount: int) -> Piece:
    if amount >= lot.amount:
        piece = Piece(lot.id, lot.ts, lot.amount, lot.cost)
        lot.amount = lot.cost = 0
        return piece
    cost = share(lot.cost, amount, lot.amount)
    lot.amount -= amount
    lot.cost -= cost
    return Piece(lot.id, lot.ts, amount, cost)


class HifoPool:
    def __init__(self) -> None:
        self._heap: list[tuple[Decimal, int, Lot]] = []
        self._seq = 0
        self._balance = 0

    def add(self, lot: Lot) -> None:
        self._seq += 1
        # The unit cost as the Decimal engine orders it: its 50-digit quotient (scale-free).
        unit = Decimal(lot.cost) / lot.amount if lot.amount else Decimal(0)
        heapq.heappush(self._heap, (-unit, self._seq, lot))
        self._balance += lot.amount

    def take(self, amount: int) -> tuple[list[Piece], int]:
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

    def balance(self) -> int:
        return self._balance


class AveragePool:
    """Average cost, as ``pools.AveragePool``."""

    def __init__(self) -> None:
        self._lots: deque[Lot] = deque()
        self._amount = 0
        self._cost = 0

    def add(self, lot: Lot) -> None:
        self._lots.append(lot)
        self._amount += lot.amount
        self._cost += lot.cost

    def take(self, amount: int) -> tuple[list[Piece], int]:
        if self._amount <= 0:
            return [], amount
        used = min(amount, self._amount)
        total = self._cost if used == self._amount else share(self._cost, used, self._amount)
        self._amount -= used
        self._cost -= total
        pieces: list[Piece] = []
        left, cost_left = used, total
        while left > 0:
            lot = self._lots[0]
            part = min(left, lot.amount)
            cost = cost_left if part == left else share(total, part, used)
            pieces.append(Piece(lot.id, lot.ts, part, cost))
            lot.amount -= part
            left -= part
            cost_left -= cost
            if lot.amount == 0:
                self._lots.popleft()
        return pieces, amount - used

    def balance(self) -> int:
        return self._amount


POOLS: dict[str, type[FifoPool] | type[HifoPool] | type[AveragePool]] = {
    "fifo": FifoPool,
    "lifo": LifoPool,
    "hifo": HifoPool,
    "average": AveragePool,
}


class ScaledEngine:
    """``engine.Engine`` over scaled integers; see the module docstring."""

    def __init__(self, method: str, quote: str = "USDT", long_term_days: int = 365) -> None:
        if method not in POOLS:
            raise TaxError(f"unknown tax method {method!r} (use one of: {', '.join(POOLS)})")
        self.method, self.quote, self.long_ms = method, quote.upper(), long_term_days * DAY_MS
        self.pools: dict[str, Pool] = defaultdict(POOLS[method])
        self.outside: dict[str, deque[Piece]] = defaultdict(deque)
        self.prices: dict[str, tuple[Number, Number]] = {}
        self.result = Result(method, self.quote)
        # Set by ``reporter.py`` to run the pools of some assets only (prices follow every trade):
        self.mine: frozenset[str] | None = None  # the assets whose pools this engine runs; None: all
        self.lead = True  # whether it reports the warnings that belong to no asset's pool
        # The place of the current event, ``4 * index + 2``, and that of every disposal and warning:
        # a fee disposal (``- 1``) comes before its trade's, and warnings on prices (``- 2``) first.
        self.key = 2
        self.disposal_keys: list[int] = []
        self.warning_keys: list[int] = []

    def value_of(self, asset: str, amount: Number) -> Number | None:
        if asset == self.quote:
            return amount
        last = self.prices.get(asset)
        if last is None:
            return None
        value, units = last
        return Decimal(amount) * value / units

    def warn(self, text: str, key: int) -> None:
        self.result.warnings.append(text)
        self.warning_keys.append(key)

    def acquire(self, asset: str, lot_id: str, ts: int, amount: int, cost: Number) -> None:
        if self.mine is not None and asset not in self.mine:
            return
        if asset != self.quote and amount > 0:
            self.pools[asset].add(Lot(lot_id, ts, amount, rnd(cost)))

    def dispose(self, asset: str, amount: int, proceeds: Number, ts: int, kind: str, source: str, ref: str) -> None:
        if asset == self.quote or amount <= 0 or (self.mine is not None and asset not in self.mine):
            return
        pieces, short = self.pools[asset].take(amount)
        if short > 0:
            self.warn(
                f"{ref}: disposed of {text(short)} {asset} more than the ledger holds; counted at zero cost", self.key
            )
            pieces.append(Piece("unknown", ts, short, 0))
        p = proceeds if type(proceeds) is int else rnd(proceeds)
        long_before = ts - self.long_ms
        if len(pieces) == 1:
            oldest = newest = pieces[0].acquired_ts
        else:
            stamps = [x.acquired_ts for x in pieces]
            oldest, newest = min(stamps), max(stamps)
        if (oldest < long_before) == (newest < long_before):
            cost = pieces[0].cost if len(pieces) == 1 else sum([x.cost for x in pieces])
            term = "long" if oldest < long_before else "short"
            self.result.disposals.append(
                Disposal(ts, asset, amount, p, cost, p - cost, term, kind, source, ref, pieces, (ts - oldest) // DAY_MS)  # type: ignore[arg-type]
            )
            self.disposal_keys.append(self.key)
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
            self.result.disposals.append(
                Disposal(ts, asset, amt, part, cost, part - cost, term, kind, source, ref, ps, held)  # type: ignore[arg-type]
            )
            self.disposal_keys.append(self.key)

    def trade(self, t: Row) -> None:
        q = self.quote
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
            # The usual trade, as in ``engine.Engine.trade``.
            self.prices[t.base] = (value, amount)
            if self.mine is not None and t.base not in self.mine:
                return  # another process runs this asset's pool
            fee = t.fee
            ref = t.ref
            if t.side == "buy":
                cost: Number = value
                if fee and fa == q:  # ``value * fee / value``: exactly ``fee`` unless it needs 50+ digits
                    cost += fee if 0 <= value * fee < _EXACT else Decimal(value) * fee / value
                elif fee and fa:
                    amount -= fee
                if amount > 0:
                    self.pools[t.base].add(Lot(ref, t.ts, amount, cost if type(cost) is int else rnd(cost)))
            else:
                proceeds: Number = value
                if fee and fa == q:
                    proceeds -= fee if 0 <= value * fee < _EXACT else Decimal(value) * fee / value
                elif fee and fa:
                    amount += fee
                self.dispose(t.base, amount, proceeds, t.ts, "trade", t.source, ref)
            return
        self._general(t, t.ref)

    def _general(self, t: Row, ref: str) -> None:
        q = self.quote
        value: Number
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
                if self.lead:
                    self.warn(f"{ref}: no {q} price for {t.base} or {t.quote}; valued at 0", self.key - 2)
                found = 0
            value = found
            if t.amount:
                self.prices[t.base] = (value, t.amount)
        if t.side == "buy":
            give, give_amt, get, get_amt = t.quote, t.cost, t.base, t.amount
        else:
            give, give_amt, get, get_amt = t.base, t.amount, t.quote, t.cost
        fee, fa = t.fee, t.fee_asset
        fee_value: Number = 0
        if fee and fa:
            if t.fee_value is not None:
                fee_value = t.fee_value
            elif fa == give and give_amt:
                fee_value = Decimal(value) * fee / give_amt
            elif fa == get and get_amt:
                fee_value = Decimal(value) * fee / get_amt
            else:
                known = self.value_of(fa, fee)
                if known is None and self.lead:
                    self.warn(f"{ref}: no {q} price for the fee asset {fa}; fee valued at 0", self.key - 2)
                fee_value = known or 0
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
            self.key -= 1
            self.dispose(fa, fee, fee_value, t.ts, "fee", t.source, ref)
            self.key += 1
            if get != q:
                cost += fee_value
            else:
                proceeds -= fee_value
        self.dispose(give, give_amt, proceeds, t.ts, "trade", t.source, ref)
        self.acquire(get, ref, t.ts, get_amt, cost)

    def own_withdrawal(self, w: TransferRow) -> None:
        if self.lead:
            self.result.own_transfers += 1
        self.dispose(w.asset, w.fee, 0, w.ts, "transfer-fee", w.source, f"{w.source}:withdrawal:{w.id}")

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
            value = self.value_of(d.asset, left)
            if value is None:
                ref = f"{d.source}:deposit:{d.id}"
                self.warn(f"{ref}: {text(left)} {d.asset} arrived with no known cost; counted at zero cost", self.key)
            self.acquire(d.asset, f"{d.source}:deposit:{d.id}", d.ts, left, value or 0)


def compute(
    trades: Iterable[Row],
    transfers: Iterable[TransferRow] = (),
    *,
    method: str = "fifo",
    quote: str = "USDT",
    long_term_days: int = 365,
) -> Result:
    """``engine.compute`` over scaled rows: the disposals' and holdings' figures are scaled ints."""
    engine = ScaledEngine(method, quote, long_term_days)
    with paused_gc():
        return run(engine, *events(trades, transfers))


Event = Row | TransferRow
# A trade of one asset as ``Ledger.own_trades`` reads it for ``run_own``: (key, source, ref, ts,
# buy, amount, cost, fee, fee_in, fee_value); ``fee_in`` is 0 (no fee), 1 (in the base), 2 (in the quote).
OwnRow = tuple[int, str, str, int, int, int, int, int, int, int | None]
Pairs = dict[tuple[str, str, str], tuple[str, str, str]]


def events(trades: Iterable[Row], transfers: Iterable[TransferRow]) -> tuple[list[Event], Pairs]:
    """Every event in the order the engine takes them, and the transfers between own accounts."""
    transfers = list(transfers)
    pairs = match_transfers(transfers)  # type: ignore[arg-type]  # reads kinds, ids and compares amounts
    trades = trades if isinstance(trades, list) else list(trades)
    if not transfers and all(a.ts <= b.ts for a, b in pairwise(trades)):
        return trades, pairs  # type: ignore[return-value]  # the ledger's order already
    # Stable sort: events at the same ms keep the ledger's order; deposits first, withdrawals last.
    keyed: list[tuple[int, int, Event]] = [(t.ts, 1, t) for t in trades]
    keyed += [(t.ts, 0 if t.kind == "deposit" else 2, t) for t in transfers]
    keyed.sort(key=lambda e: (e[0], e[1]))
    return [e[2] for e in keyed], pairs


def run(engine: ScaledEngine, ordered: list[Event], pairs: Pairs, places: Iterable[int] | None = None) -> Result:
    """Run the events through ``engine``; returns its result, holdings filled in. ``places`` are
    the events' indexes in the whole ledger when ``ordered`` is only part of it."""
    matched_deposits = set(pairs.values())
    trade = engine.trade
    with localcontext(CONTEXT):
        for i, ev in zip(range(len(ordered)) if places is None else places, ordered, strict=True):
            engine.key = 4 * i + 2
            if type(ev) is Row:
                trade(ev)
            elif isinstance(ev, TransferRow):
                if ev.kind == "withdrawal":
                    if (ev.source, ev.kind, ev.id) in pairs:
                        engine.own_withdrawal(ev)
                    else:
                        engine.withdrawal(ev)
                elif (ev.source, ev.kind, ev.id) not in matched_deposits:
                    engine.deposit(ev)
    engine.result.holdings = {a: p.balance() for a, p in engine.pools.items() if p.balance()}  # type: ignore[misc]
    engine.result.scale = SCALE
    return engine.result


def run_own(engine: ScaledEngine, trades: Iterable[tuple[str, list[OwnRow]]]) -> Result:
    """Run the trades of each asset through ``engine``, in a ledger where no event reads a price
    (``Ledger.only_usual_trades``): each asset's pool then depends on its own trades only, which
    are all trades against the report currency. ``engine.key`` is ``4 * key + 2`` (the ``run``
    places with the ``Ledger.order_key`` keys). The usual trade is ``ScaledEngine.trade``, inlined;
    any other (nothing paid, a known fee value) goes to ``ScaledEngine._general``, as there."""
    q = engine.quote
    dispose, general = engine.dispose, engine._general
    new = tuple.__new__
    with localcontext(CONTEXT):
        for asset, rows in trades:
            pool = engine.pools[asset]
            add = pool.add
            for key, source, ref, ts, buy, stored, value, fee, fee_in, fee_value in rows:
                amount = stored
                if amount and value and fee_value is None:
                    if buy:
                        cost: Number = value
                        if fee_in == 2:
                            cost += fee if 0 <= value * fee < _EXACT else Decimal(value) * fee / value
                        elif fee_in:
                            amount -= fee
                        if amount > 0:
                            add(Lot(ref, ts, amount, cost if type(cost) is int else rnd(cost)))
                    else:
                        proceeds: Number = value
                        if fee_in == 2:
                            proceeds -= fee if 0 <= value * fee < _EXACT else Decimal(value) * fee / value
                        elif fee_in:
                            amount += fee
                        engine.key = 4 * key + 2
                        dispose(asset, amount, proceeds, ts, "trade", source, ref)
                else:
                    engine.key = 4 * key + 2
                    fee_asset = None if fee_in == 0 else asset if fee_in == 1 else q
                    side = "buy" if buy else "sell"
                    general(new(Row, (source, ref, ts, asset, q, side, amount, value, fee, fee_asset, fee_value)), ref)
    engine.result.holdings = {a: p.balance() for a, p in engine.pools.items() if p.balance()}  # type: ignore[misc]
    engine.result.scale = SCALE
    return engine.result
