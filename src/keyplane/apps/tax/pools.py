"""Lot pools, one per cost-basis method, over scaled integers (``figures.py``). Each holds one
asset's acquisitions (lots) and hands out pieces of them on a disposal, in its method's order:

- FIFO: the earliest lot first (the US default when lots are not identified);
- LIFO: the latest lot first;
- HIFO: the lot with the highest unit cost first;
- average: every unit costs the pool's average (total cost / total units; Canada's ACB, the UK
  pool without its same-day and 30-day rules); lots are still used oldest first, for dates only.

Costs stay exact: a piece's cost is ``share`` of its lot's and is subtracted from what remains, and
a piece that empties a lot takes exactly the lot's remaining cost, so the costs handed out never
add up to more or less than the costs put in.

Rounding is half to even, in ``money.CONTEXT``'s 50 digits: ``share(x, part, whole)`` is
``(x * part / whole)`` rounded to an integer as a 50-digit ``Decimal`` quotient would be. For a
product below ``10**49`` that quotient cannot fall on the other side of a half, so one integer
division gives it; a larger product goes through ``Decimal``.
"""

from __future__ import annotations

import heapq
from collections import deque
from decimal import Decimal
from typing import NamedTuple, Protocol

EXACT = 10**49  # below this, a 50-digit quotient rounds like the exact one
_D1 = Decimal(1)

Number = int | Decimal  # a scaled figure: an int, or a Decimal between two roundings


def rnd(x: Number) -> int:
    """``x`` rounded to a whole unit, half to even."""
    if type(x) is int:
        return x
    return int(Decimal(x).quantize(_D1))


def share(x: int, part: int, whole: int) -> int:
    """``x * part / whole``, rounded half to even (see the module docstring)."""
    n = x * part
    if 0 <= n < EXACT and whole > 0:
        q, r = divmod(n, whole)
        r += r
        if r > whole or (r == whole and q & 1):
            q += 1
        return q
    return int((Decimal(x) * part / whole).quantize(_D1))


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

    def take(self, amount: int) -> tuple[list[Piece], int]:
        """Pieces covering up to ``amount`` and the shortfall (0 unless the pool ran dry)."""
        ...

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
                pop()
                left -= lot_amount
            else:
                lot_cost = lot.cost
                n = lot_cost * left  # share(lot_cost, left, lot_amount), inlined
                if 0 <= n < EXACT:
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
    """Take ``amount`` (at most ``lot.amount``) out of ``lot``."""
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
        # The unit cost as a 50-digit quotient (scale-free); equal costs go oldest first.
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
    """Average cost: a disposal costs ``total_cost * amount / total_amount``. The lots are kept
    oldest first only to name the units used and to date them for the holding period."""

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
METHODS = tuple(POOLS)
