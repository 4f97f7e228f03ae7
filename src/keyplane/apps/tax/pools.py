"""Lot pools, one per cost-basis method. Each holds one asset's acquisitions (lots) and hands out
pieces of them on a disposal, in the order its method prescribes:

- FIFO: the earliest lot first (the US default when lots are not identified);
- LIFO: the latest lot first;
- HIFO: the lot with the highest unit cost first;
- average: every unit costs the pool's average (total cost / total units; Canada's ACB, the UK
  pool without its same-day and 30-day rules); lots are still used oldest first, for dates only.

Costs stay exact: a piece's cost is rounded to ``QUANTUM`` and subtracted from what remains, and a
piece that empties a lot takes exactly the lot's remaining cost, so the costs handed out never add
up to more or less than the costs put in.
"""

from __future__ import annotations

import heapq
from collections import deque
from decimal import Decimal
from typing import NamedTuple, Protocol

QUANTUM = Decimal("1e-10")
ZERO = Decimal(0)


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
