"""The account event log: what happened to each account, written in the transaction that did it.

Each order change appends its execution event (``NEW``, ``TRADE``, ``CANCELED``, ``EXPIRED``,
``TRADE_PREVENTION``, as Binance's ``executionReport`` names them) and each deposit or withdrawal
a ``BALANCE`` event, so a user-data stream (keyplane.streams.userfeed) reads exactly what committed,
in order, on any node, and a reader that reconnects after a restart misses nothing still in the
window. A row holds only what the tables do not: a TRADE names its fill (``ex_fills`` by order and
trade id), the order's fixed fields are its ``ex_orders`` row. :meth:`AccountEvents.read_after`
joins them back for the reader, so writing an event costs one small insert on the order's path.

Ids are assigned at insert and become visible at commit, which on PostgreSQL may be out of id
order across markets; :class:`EventCursor` reads such a log without skipping a late commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keyplane.db import Database
from keyplane.exchange.history import ORDER_COLS, OrderListView, OrderView, find_list
from keyplane.exchange.sql import Raw, read, write

BALANCE = "BALANCE"
KEEP_EVENTS = 200_000  # events kept (across accounts): a reader further behind than this resynchronises

_INSERT = (
    "INSERT INTO ex_account_events (user_id, ts, kind, status, order_id, trade_id, asset, delta) "
    "VALUES (:u, :ts, :k, :st, :o, :t, :a, :d)"
)
# The order's columns, as history.OrderView reads them (one list of an order's fields).
_ORDER = ", ".join("o." + c.strip() for c in ORDER_COLS.split(","))
_N_ORDER = len(ORDER_COLS.split(","))
_AFTER = (
    f"SELECT e.id, e.user_id, e.ts, e.kind, e.status, e.order_id, e.trade_id, e.asset, e.delta, {_ORDER}, "
    "f.price, f.qty, f.quote_qty, f.commission, f.commission_asset, f.is_maker "
    "FROM ex_account_events e "
    "LEFT JOIN ex_orders o ON o.id = e.order_id AND e.kind <> 'LIST_STATUS' "
    "LEFT JOIN ex_fills f ON e.kind = 'TRADE' AND f.order_id = e.order_id AND f.trade_id = e.trade_id "
    "WHERE e.id > :after ORDER BY e.id LIMIT :n"
)
# An order's cumulative fills up to one trade (a TRADE event's z and Z, as of that fill).
_CUMULATIVE = (
    "SELECT COALESCE(SUM(qty), 0), COALESCE(SUM(quote_qty), 0) FROM ex_fills WHERE order_id = :o AND trade_id <= :t"
)
_LAST = "SELECT MAX(id) FROM ex_account_events"
_BALANCES = "SELECT asset, available, locked FROM ex_balances WHERE user_id = :u"


def order_event(
    user_id: int, kind: str, status: str, order_id: int, ts: int, trade_id: int | None = None
) -> dict[str, Any]:
    return {"u": user_id, "ts": ts, "k": kind, "st": status, "o": order_id, "t": trade_id, "a": None, "d": None}


LIST_STATUS = "LIST_STATUS"


def list_event(user_id: int, status: str, list_id: int, ts: int) -> dict[str, Any]:
    """An order list's ``listStatus`` (``status``: EXEC_STARTED or ALL_DONE); ``order_id`` holds the list's id."""
    return {"u": user_id, "ts": ts, "k": LIST_STATUS, "st": status, "o": list_id, "t": None, "a": None, "d": None}


def balance_event(user_id: int, asset: str, delta: int, ts: int) -> dict[str, Any]:
    return {"u": user_id, "ts": ts, "k": BALANCE, "st": None, "o": None, "t": None, "a": asset, "d": delta}


def append(db: Raw, rows: Sequence[dict[str, Any]]) -> None:
    """Append events on ``db``'s transaction (they commit, or roll back, with the change)."""
    if rows:
        db.many(_INSERT, list(rows))


@dataclass(frozen=True, slots=True)
class FillFields:
    price: int
    qty: int
    quote_qty: int
    commission: int
    commission_asset: str
    is_maker: bool


@dataclass(frozen=True, slots=True)
class AccountEvent:
    id: int
    user_id: int
    ts: int
    kind: str
    status: str | None
    order_id: int | None
    trade_id: int | None
    asset: str | None
    delta: int | None
    order: OrderView | None = None  # the order as it is now (its row in ex_orders)
    fill: FillFields | None = None
    # TRADE: the order's executed quantity and quote as of this fill; other order events: as now
    cumulative: tuple[int, int] = (0, 0)
    order_list: OrderListView | None = None  # LIST_STATUS: the list, as it is now


class AccountEvents:
    def __init__(self, db: Database) -> None:
        self.db = db

    def last_id(self) -> int:
        with read(self.db) as db:
            row = db.one(_LAST)
        return int(row[0]) if row and row[0] is not None else 0

    def read_after(
        self, after: int, users: Callable[[int], bool], limit: int = 2000
    ) -> tuple[list[int], list[AccountEvent]]:
        """(the ids of every event after ``after``, the events of the accounts ``users`` selects,
        with their orders and fills joined), oldest first, at most ``limit`` ids."""
        ids: list[int] = []
        out: list[AccountEvent] = []
        with read(self.db) as db:
            for r in db.all(_AFTER, {"after": after, "n": limit}):
                ids.append(int(r[0]))
                if not users(int(r[1])):
                    continue
                order = None if r[9] is None else OrderView(*r[9 : 9 + _N_ORDER])
                f = r[9 + _N_ORDER :]
                fill = (
                    None
                    if f[0] is None
                    else FillFields(int(f[0]), int(f[1]), int(f[2]), int(f[3]), str(f[4]), bool(f[5]))
                )
                cumulative = (0, 0)
                if r[3] == "TRADE" and r[6] is not None:
                    c = db.one(_CUMULATIVE, {"o": r[5], "t": r[6]})
                    cumulative = (int(c[0]), int(c[1])) if c else (0, 0)
                elif order is not None and r[3] != "NEW":
                    cumulative = (order.executed_qty, order.cum_quote)
                order_list = None
                if r[3] == LIST_STATUS and r[5] is not None:
                    order_list = find_list(db, int(r[1]), int(r[5]), None)
                out.append(
                    AccountEvent(
                        int(r[0]), int(r[1]), int(r[2]), str(r[3]), r[4], r[5], r[6], r[7],
                        None if r[8] is None else int(r[8]), order, fill, cumulative, order_list,
                    )
                )  # fmt: skip
        return ids, out

    def balances(self, user_id: int) -> dict[str, tuple[int, int]]:
        """asset -> (available, locked) for every asset the account holds a row of."""
        with read(self.db) as db:
            return {str(a): (int(f), int(lk)) for a, f, lk in db.all(_BALANCES, {"u": user_id})}

    def prune(self) -> None:
        """Keep the last ``KEEP_EVENTS`` events (a periodic task)."""
        with write(self.db) as db:
            row = db.one(_LAST)
            if row and row[0] is not None and int(row[0]) > KEEP_EVENTS:
                db.execute("DELETE FROM ex_account_events WHERE id <= :b", {"b": int(row[0]) - KEEP_EVENTS})


class EventCursor:
    """A reader's place in a log whose ids are assigned at insert and appear at commit, perhaps
    out of id order (concurrent PostgreSQL transactions): every id up to ``floor`` has been taken,
    and ``seen`` holds the ids above it already taken. An id missing below one seen is waited for
    up to ``grace_s`` (a transaction still committing), then given up as never to come (rolled back).
    """

    def __init__(self, floor: int, grace_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = floor
        self.grace_s = grace_s
        self.clock = clock
        self.seen: set[int] = set()
        self._stuck_since: float | None = None

    def take(self, ids: Iterable[int]) -> set[int]:
        """Of ``ids`` (a read of every id above ``floor``), those not taken before; moves the floor."""
        new = {i for i in ids if i > self.floor and i not in self.seen}
        self.seen |= new
        self._advance()
        return new

    def _advance(self) -> None:
        while self.floor + 1 in self.seen:
            self.floor += 1
            self.seen.discard(self.floor)
        if not self.seen:
            self._stuck_since = None
            return
        now = self.clock()
        if self._stuck_since is None:
            self._stuck_since = now
        elif now - self._stuck_since >= self.grace_s:  # the gap below the lowest seen id will not fill
            self.floor = min(self.seen) - 1
            self._stuck_since = None
            self._advance()
