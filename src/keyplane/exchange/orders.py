"""Placing, cancelling and querying orders.

:meth:`OrderService.place` runs in **one** write transaction: the order row, the funds it reserves,
its fills (trades, both sides' fills, maker order and book updates), every balance change and every
ledger entry commit together or not at all. Matching holds the market's lock for the whole
transaction: ``SELECT ... FOR UPDATE`` on the market row on PostgreSQL; on SQLite the write
transaction itself (``BEGIN IMMEDIATE``) already serialises writers across processes.

:meth:`OrderService.place_batch` places several orders in one transaction, each under a SAVEPOINT,
so that one commit serves them all (group commit, see :mod:`keyplane.exchange.batching`): an order
refused for a business reason rolls back to its savepoint alone, and a failed commit applies none.

A signed request carries a deadline: its timestamp plus ``recvWindow``, after which its client no
longer expects it to take effect (and may already have given up on it). The authenticator checks
it on arrival; a write checks it again inside its transaction, with the market lock held, right
before anything is applied, so that an order or a cancel that waited (for a lock, for a database
that went silent) is refused with ``-1021`` instead of taking effect late.

A cancel of one order, of all of an account's orders in a market, or the cancel half of a
cancel-replace is written in one place, :meth:`OrderService._cancel_open`.

Here: checks and placement (matching plan, funds, the order row, the book row), and cancels. Writing fills is
:mod:`keyplane.exchange.fills`; reading orders and fills back is :mod:`keyplane.exchange.history`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import exc

from keyplane.db import UNAVAILABLE_ERRORS, Database
from keyplane.errors import OutsideRecvWindow
from keyplane.exchange import events as EV
from keyplane.exchange import ledger as L
from keyplane.exchange.errors import (
    CancelRejected,
    DuplicateOrder,
    ExchangeError,
    InsufficientBalance,
    KeyLimitExceeded,
    WouldTakeLiquidity,
)
from keyplane.exchange.fills import apply_fills, fee
from keyplane.exchange.history import OPEN, ORDER_COLS, OrderReads, OrderView
from keyplane.exchange.markets import Market, plain
from keyplane.exchange.matching import Plan, Resting, Taker, plan
from keyplane.exchange.params import NewOrder, check_notional
from keyplane.exchange.sql import Raw, write
from keyplane.keys.format import mask

# Re-exported: callers import them from here.
__all__ = [
    "CANCEL_RESTRICTIONS", "OPEN", "OrderService", "OrderView", "Placement", "RecvWindowPassed", "Replaced",
    "check_deadline", "fee", "reservation",
]  # fmt: skip

# The opposite side, best first, only as far as the taker's limit reaches (``sort_key <= :lim``):
# an order that does not cross reads no row at all.
_BOOK_SIDE = (
    "SELECT order_id, user_id, price, remaining, sort_key FROM ex_book WHERE symbol = :s AND side = :side "
    "AND sort_key <= :lim"
)
_BOOK_TOP = _BOOK_SIDE + " ORDER BY sort_key, order_id LIMIT :n"
_BOOK_AFTER = (
    _BOOK_SIDE + " AND (sort_key > :k OR (sort_key = :k AND order_id > :o)) ORDER BY sort_key, order_id LIMIT :n"
)
_NO_LIMIT = 2**62  # a sort key above any price: a market order reaches the whole side
_LOCK_MARKET = "SELECT trade_seq FROM ex_markets WHERE symbol = :s FOR UPDATE"
_READ_SEQ = "SELECT trade_seq FROM ex_markets WHERE symbol = :s"
_SAVEPOINT = "SAVEPOINT kp_order"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT kp_order"
_RELEASE = "RELEASE SAVEPOINT kp_order"
_SET_SEQ = "UPDATE ex_markets SET trade_seq = :q WHERE symbol = :s"
_BUMP_BOOK = "UPDATE ex_markets SET book_seq = book_seq + 1 WHERE symbol = :s RETURNING book_seq"
_BOOK_CHANGE = "INSERT INTO ex_book_changes (symbol, seq, side, price) VALUES (:s, :q, :side, :p)"


@dataclass
class _Deferred:
    """The logs that a transaction's orders add to (the book-change log, the account event log),
    written once before it commits: a batch's orders share one update id per market."""

    levels: dict[str, set[tuple[str, int]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def add(self, symbol: str, levels: set[tuple[str, int]], events: list[dict[str, Any]]) -> None:
        """One order's, once it has been applied in full (a refused order adds nothing)."""
        if levels:
            self.levels.setdefault(symbol, set()).update(levels)
        self.events += events

    def write(self, db: Raw) -> None:
        for symbol, levels in sorted(self.levels.items()):
            note_book_change(db, symbol, levels)
        EV.append(db, self.events)


def note_book_change(db: Raw, symbol: str, levels: set[tuple[str, int]]) -> None:
    """The book of ``symbol`` changed at these (side, price) levels, in ``db``'s transaction (the
    market locked): a new update id, and the levels it touched (keyplane.streams.hub reads both)."""
    row = db.one(_BUMP_BOOK, {"s": symbol})
    assert row is not None
    seq = int(row[0])
    db.many(_BOOK_CHANGE, [{"s": symbol, "q": seq, "side": side, "p": price} for side, price in sorted(levels)])


_AVAILABLE = "SELECT available FROM ex_balances WHERE user_id = :u AND asset = :a"
_TAKER_ORDER = "UPDATE ex_orders SET executed_qty = :q, cum_quote = :c, status = :st, updated_ms = :t WHERE id = :id"
_INSERT_ORDER = (
    "INSERT INTO ex_orders (user_id, key_id, symbol, side, type, tif, price, orig_qty, orig_quote_qty, executed_qty, "
    "cum_quote, status, client_order_id, stp, created_ms, updated_ms) VALUES (:user_id, :key_id, :symbol, :side, "
    ":type, :tif, :price, :orig_qty, :orig_quote_qty, 0, 0, 'NEW', :client_order_id, :stp, :now, :now) RETURNING id"
)
# Cancelling: the book row goes, and tells what the order still held; an account's open orders in a
# market are the ones on its book.
_UNBOOK = "DELETE FROM ex_book WHERE order_id = :id RETURNING remaining"
_OPEN_IN_MARKET = (
    f"SELECT {ORDER_COLS} FROM ex_orders WHERE id IN "
    "(SELECT order_id FROM ex_book WHERE user_id = :u AND symbol = :s) ORDER BY id"
)
# Binance's cancelRestrictions: the only status an order may have to be cancelled.
CANCEL_RESTRICTIONS = {"ONLY_NEW": "NEW", "ONLY_PARTIALLY_FILLED": "PARTIALLY_FILLED"}
_INSERT_BOOK = (
    "INSERT INTO ex_book (order_id, symbol, side, sort_key, price, remaining, user_id) "
    "VALUES (:order_id, :symbol, :side, :sort_key, :price, :remaining, :user_id)"
)


class RecvWindowPassed(OutsideRecvWindow, ExchangeError):
    """The request's recvWindow ended before it could be applied: nothing was written. The same
    rule as the authenticator's ``TimestampOutsideWindow``, checked again at the last moment, so
    the same owner of the wire code (keyplane/errors.py)."""

    def __init__(self, late_ms: int, what: str = "order") -> None:
        super().__init__(
            f"Timestamp for this request is outside of the recvWindow: the {what} reached the matching engine "
            f"{late_ms} ms after its recvWindow ended, so it was not applied. Send it again with a new timestamp."
        )
        self.late_ms = late_ms


@dataclass(frozen=True, slots=True)
class Placement:
    """One order to place: what :meth:`OrderService.place` takes, as one value for a batch.
    ``not_after_s`` (epoch seconds: the request's timestamp + recvWindow) is when it stops being
    placeable; None for orders that do not come from a signed request with a deadline."""

    user_id: int
    order: NewOrder
    key_id: str | None = None
    max_notional: Decimal | None = None
    not_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Replaced:
    """What :meth:`OrderService.cancel_replace` did with each half: the cancelled order, or why the
    cancel failed; the new order, or why it was refused, or None when it was not attempted."""

    canceled: OrderView | ExchangeError
    placed: OrderView | ExchangeError | None


def check_deadline(clock: Callable[[], float], not_after_s: float | None, what: str) -> None:
    """RecvWindowPassed once ``clock()`` is past ``not_after_s`` (epoch seconds; None: no deadline)."""
    if not_after_s is not None and (late_s := clock() - not_after_s) > 0:
        raise RecvWindowPassed(int(late_s * 1000), what)


def reservation(market: Market, side: str, price: int, remaining: int) -> int:
    """What a resting order keeps locked: the quote for a bid, the base for an ask."""
    return market.notional(remaining, price) if side == "BUY" else remaining


def _check_key_limit(market: Market, notional: int, max_notional: Decimal, key_id: str | None) -> None:
    limit = int(max_notional.scaleb(market.quote.decimals))
    if notional > limit:
        q = market.quote
        shown = f"API key {mask(key_id)}" if key_id else "This API key"
        raise KeyLimitExceeded(
            f"{shown} has no operation privilege for orders over its maximum notional of "
            f"{plain(max_notional)} {q.name}: this order's notional is {q.plain(notional)} {q.name}"
        )


class OrderService(OrderReads):
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        # Called on the committing thread, after a commit, with the symbols whose book or trades
        # it changed (the market streams' cue to read them again; see keyplane.streams.hub).
        self.on_commit: list[Callable[[Collection[str]], None]] = []

    def _committed(self, symbols: Collection[str]) -> None:
        for listener in self.on_commit:
            listener(symbols)

    def _lock_market(self, db: Raw, symbol: str) -> int | None:
        if self.db.is_sqlite:
            return None
        row = db.one(_LOCK_MARKET, {"s": symbol})
        assert row is not None
        return int(row[0])

    # -- placing ---------------------------------------------------------------------------------

    def place(
        self,
        user_id: int,
        order: NewOrder,
        *,
        key_id: str | None = None,
        max_notional: Decimal | None = None,
        not_after_s: float | None = None,
    ) -> OrderView:
        """Place one order in a transaction of its own; raises an ExchangeError if it is refused
        (``RecvWindowPassed`` once ``not_after_s`` has passed)."""
        with write(self.db) as db:
            seq = self._lock_market(db, order.market.symbol)
            view = self._place(db, Placement(user_id, order, key_id, max_notional, not_after_s), seq)
        self._committed((view.symbol,))
        return view

    def place_batch(self, batch: Sequence[Placement]) -> list[OrderView | Exception]:
        """Place several orders, in the given order, in ONE transaction (group commit).

        Each order runs inside a SAVEPOINT: an order refused for a business reason (or failing on
        its own) is rolled back to its savepoint and its exception takes its place in the returned
        list, while the others stand. Nothing is visible before the single commit; if the database
        fails (an ``UNAVAILABLE_ERRORS`` error in an order, or the commit itself), the whole
        transaction rolls back and ``ServiceUnavailable`` is raised for the batch as a whole.
        """
        out: list[OrderView | Exception] = []
        with write(self.db) as db:
            # On PostgreSQL take every market lock up front, in a fixed order, so that two processes'
            # batches can never wait on each other's locks (the trade sequence is re-read per order).
            for symbol in sorted({p.order.market.symbol for p in batch}):
                self._lock_market(db, symbol)
            # One book change per market and one insert of account events for the whole batch:
            # per order they cost about as much as the rest of a resting order's statements.
            deferred = _Deferred()
            for p in batch:
                db.execute(_SAVEPOINT)
                try:
                    out.append(self._place(db, p, None, deferred))
                except UNAVAILABLE_ERRORS:
                    raise
                except Exception as e:  # this order only: undo its writes, keep the batch going
                    db.execute(_ROLLBACK_TO)
                    out.append(e)
                db.execute(_RELEASE)
            deferred.write(db)
        self._committed({v.symbol for v in out if isinstance(v, OrderView)})
        return out

    def _place(self, db: Raw, req: Placement, seq: int | None, deferred: _Deferred | None = None) -> OrderView:
        """The placement itself, on ``db``'s transaction (the market already locked). ``seq`` is
        the market's trade sequence if the lock read it, else None (it is read when needed).
        With ``deferred`` (a batch), its book change and account events are left there for the
        batch to write once; without, they are written here."""
        # Last moment before anything is written, with the market lock held: a request that waited
        # past its recvWindow (for the lock, or for a database that went silent) is not applied.
        check_deadline(self.clock, req.not_after_s, "order")
        user_id, order, key_id, max_notional = req.user_id, req.order, req.key_id, req.max_notional
        market = order.market
        now = int(self.clock() * 1000)
        taker = Taker(user_id, order.side, order.limit, order.qty, order.quote_qty or None, order.stp)
        opposite = "SELL" if order.side == "BUY" else "BUY"

        # Asks cross a bid priced L when price <= L (sort_key = price); bids cross an ask priced L
        # when price >= L (sort_key = -price <= -L).
        lim = _NO_LIMIT if order.limit is None else (order.limit if order.side == "BUY" else -order.limit)

        def fetch(after: tuple[int, int] | None, n: int) -> list[Resting]:
            if after is None:
                rows = db.all(_BOOK_TOP, {"s": market.symbol, "side": opposite, "lim": lim, "n": n})
            else:
                args = {"s": market.symbol, "side": opposite, "lim": lim, "k": after[0], "o": after[1], "n": n}
                rows = db.all(_BOOK_AFTER, args)
            return [Resting(r[0], r[1], r[2], r[3], r[4]) for r in rows]

        p = plan(market, taker, fetch)
        if order.type == "LIMIT_MAKER" and p.fills:
            raise WouldTakeLiquidity()
        if order.tif == "FOK" and p.qty < (order.qty or 0):
            p = Plan(stopped=p.stopped or "fok")
        if order.type == "MARKET" and order.qty is not None and p.fills:
            check_notional(market, market.notional(order.qty, p.fills[0].maker.price))
        spend_asset = market.quote.name if order.side == "BUY" else market.base.name
        if order.type == "MARKET":
            notional = order.quote_qty if order.qty is None else p.quote
        else:
            notional = market.notional(order.qty or 0, order.price)
        # A buy reserves the quote it may spend; a sell, the base it offers.
        reserve = notional if order.side == "BUY" else order.qty or 0
        if max_notional is not None:
            _check_key_limit(market, notional, max_notional, key_id)
        have = db.one(_AVAILABLE, {"u": user_id, "a": spend_asset})
        if (have[0] if have else 0) < reserve:
            raise InsufficientBalance()

        try:
            row = db.one(
                _INSERT_ORDER,
                {
                    "user_id": user_id, "key_id": key_id, "symbol": market.symbol, "side": order.side,
                    "type": order.type, "tif": order.tif, "price": order.price, "orig_qty": order.qty or 0,
                    "orig_quote_qty": order.quote_qty, "client_order_id": order.client_id, "stp": order.stp,
                    "now": now,
                },
            )  # fmt: skip
            assert row is not None
            order_id = int(row[0])
        except exc.IntegrityError as e:
            raise DuplicateOrder() from e

        journal = L.Journal(now)
        ref = f"order:{order_id}"
        journal.move(ref, spend_asset, L.available(user_id), L.locked(user_id), reserve)
        view = OrderView(
            order_id, user_id, market.symbol, order.side, order.type, order.tif, order.price, order.qty or 0,
            order.quote_qty, 0, 0, "NEW", order.client_id, order.stp, now, now,
        )  # fmt: skip
        events = [EV.order_event(user_id, "NEW", "NEW", order_id, now)]
        if p.fills:
            if seq is None:
                row = db.one(_READ_SEQ, {"s": market.symbol})
                assert row is not None
                seq = int(row[0])
            apply_fills(db, journal, market, view, p.fills, seq, now, events)
            db.execute(_SET_SEQ, {"q": seq + len(p.fills), "s": market.symbol})

        view.executed_qty, view.cum_quote = p.qty, p.quote
        remaining = (order.qty or 0) - p.qty
        held = 0
        if p.stopped == "stp":
            view.status = "EXPIRED_IN_MATCH"
        elif order.qty is None:
            view.status = "FILLED" if p.stopped == "budget" and p.fills else "EXPIRED"
        elif remaining == 0:
            view.status = "FILLED"
        elif order.type == "MARKET" or order.tif in ("IOC", "FOK"):
            view.status = "EXPIRED"
        else:
            view.status = "PARTIALLY_FILLED" if p.fills else "NEW"
            held = reservation(market, order.side, order.price, remaining)
            db.execute(
                _INSERT_BOOK,
                {
                    "order_id": order_id, "symbol": market.symbol, "side": order.side,
                    "sort_key": -order.price if order.side == "BUY" else order.price, "price": order.price,
                    "remaining": remaining, "user_id": user_id,
                },
            )  # fmt: skip
        if view.status == "FILLED":  # the taker's last TRADE event filled it
            next(e for e in reversed(events) if e["o"] == order_id)["st"] = "FILLED"
        elif view.status not in OPEN:  # what the order did not fill expired
            kind = "TRADE_PREVENTION" if view.status == "EXPIRED_IN_MATCH" else "EXPIRED"
            events.append(EV.order_event(user_id, kind, view.status, order_id, now))
        touched = {(opposite, f.maker.price) for f in p.fills}
        if view.status in OPEN:  # it rests on the book
            touched.add((order.side, order.price))
        consumed = p.quote if order.side == "BUY" else p.qty
        journal.move(ref, spend_asset, L.locked(user_id), L.available(user_id), reserve - consumed - held)
        if view.status != "NEW":
            args = {"q": p.qty, "c": p.quote, "st": view.status, "t": now, "id": order_id}
            db.execute(_TAKER_ORDER, args)
        journal.apply(db)
        logs = deferred if deferred is not None else _Deferred()
        logs.add(market.symbol, touched, events)
        if deferred is None:
            logs.write(db)
        return view

    # -- cancelling (reading: keyplane.exchange.history.OrderReads) -----------------------------

    def cancel(
        self,
        user_id: int,
        market: Market,
        order_id: int | None,
        client_id: str | None,
        *,
        not_after_s: float | None = None,
    ) -> OrderView:
        """Cancel an open order of ``user_id`` (see :meth:`_open_order` for which); raises
        ``CancelRejected`` if there is none, ``RecvWindowPassed`` once ``not_after_s`` has passed
        (then nothing changes)."""
        with write(self.db) as db:
            self._lock_market(db, market.symbol)
            check_deadline(self.clock, not_after_s, "cancel")
            view = self._open_order(db, user_id, market, order_id, client_id)
            self._cancel_open(db, market, [view], int(self.clock() * 1000))
        self._committed((view.symbol,))
        return view

    def cancel_all(self, user_id: int, market: Market, *, not_after_s: float | None = None) -> list[OrderView]:
        """Cancel every open order of ``user_id`` in ``market`` in one transaction, and return them,
        oldest first. ``CancelRejected`` ("Unknown order sent.", as Binance answers) if there is
        none; ``RecvWindowPassed`` once ``not_after_s`` has passed (then nothing changes)."""
        with write(self.db) as db:
            self._lock_market(db, market.symbol)
            check_deadline(self.clock, not_after_s, "cancel")
            views = [OrderView(*r) for r in db.all(_OPEN_IN_MARKET, {"u": user_id, "s": market.symbol})]
            if not views:
                raise CancelRejected("Unknown order sent.")
            self._cancel_open(db, market, views, int(self.clock() * 1000))
        self._committed((market.symbol,))
        return views

    def cancel_replace(
        self,
        market: Market,
        order_id: int | None,
        client_id: str | None,
        new: Placement,
        *,
        allow_failure: bool = False,
        restriction: str | None = None,
        not_after_s: float | None = None,
    ) -> Replaced:
        """Cancel an open order of ``new.user_id`` in ``market`` and place ``new`` (in the same
        market), in ONE transaction, as Binance's ``cancelReplace`` does:

        - the cancel comes first, so the new order can use the funds it frees;
        - a cancel that fails (no such open order, or ``restriction``, a ``cancelRestrictions``
          value, excludes its status) writes nothing, and the new order is not attempted unless
          ``allow_failure`` (``ALLOW_FAILURE``; ``STOP_ON_FAILURE`` otherwise);
        - a new order refused for a business reason rolls back to its own savepoint, and a cancel
          that succeeded stands (Binance's -2021 "partially failed", in either mode).

        Nothing of either half is visible before the single commit, and a database failure applies
        neither. The recvWindow is checked once, with the market locked, before either half.
        Returns what each half did; raises only ``RecvWindowPassed`` (nothing changes) and
        ``ServiceUnavailable``."""
        if new.order.market.symbol != market.symbol:
            raise ValueError("cancel_replace places its new order in the market of the order it cancels")
        placed: OrderView | ExchangeError | None = None
        with write(self.db) as db:
            seq = self._lock_market(db, market.symbol)
            check_deadline(self.clock, not_after_s, "cancel-replace")
            canceled: OrderView | ExchangeError
            try:
                canceled = self._open_order(db, new.user_id, market, order_id, client_id, restriction)
            except CancelRejected as e:
                canceled = e
            else:
                self._cancel_open(db, market, [canceled], int(self.clock() * 1000))
            if isinstance(canceled, OrderView) or allow_failure:
                db.execute(_SAVEPOINT)
                try:  # the deadline was checked above, for both halves
                    placed = self._place(db, replace(new, not_after_s=None), seq)
                except ExchangeError as e:  # this half only; a database failure is not caught
                    db.execute(_ROLLBACK_TO)
                    placed = e
                db.execute(_RELEASE)
        if isinstance(canceled, OrderView) or isinstance(placed, OrderView):
            self._committed((market.symbol,))
        return Replaced(canceled, placed)

    def _open_order(
        self,
        db: Raw,
        user_id: int,
        market: Market,
        order_id: int | None,
        client_id: str | None,
        restriction: str | None = None,
    ) -> OrderView:
        """The open order of ``user_id`` in ``market`` that ``order_id``, else ``client_id``, names.
        With both, the order found by id must also have that client id (as on Binance). Raises
        ``CancelRejected`` if there is no such order, it is no longer open, or ``restriction`` (a
        key of ``CANCEL_RESTRICTIONS``) excludes its status."""
        view = self._find(db, user_id, market.symbol, order_id, client_id)
        if view is None or (order_id is not None and client_id is not None and view.client_order_id != client_id):
            raise CancelRejected("Unknown order sent.")
        if not view.is_open:
            raise CancelRejected(
                f"Unknown order sent: order {view.id} is {view.status} and only open orders can be canceled."
            )
        if restriction is not None and view.status != CANCEL_RESTRICTIONS[restriction]:
            raise CancelRejected("Order was not canceled due to cancel restrictions.")
        return view

    def _cancel_open(self, db: Raw, market: Market, views: Sequence[OrderView], now: int) -> None:
        """Cancel these open orders of ``market`` on ``db``'s transaction (the market locked): the
        one place a cancel is written. Each leaves the book (one book change for the levels they
        leave), becomes CANCELED (its row, its event and its view), and what it still held moves
        back from locked to available."""
        journal = L.Journal(now)
        updates: list[dict[str, object]] = []
        events = []
        for view in views:
            row = db.one(_UNBOOK, {"id": view.id})
            assert row is not None  # an open order rests on the book, and the market is locked
            asset = market.quote.name if view.side == "BUY" else market.base.name
            held = reservation(market, view.side, view.price, int(row[0]))
            journal.move(f"order:{view.id}", asset, L.locked(view.user_id), L.available(view.user_id), held)
            view.status, view.updated_ms = "CANCELED", now
            updates.append({"q": view.executed_qty, "c": view.cum_quote, "st": "CANCELED", "t": now, "id": view.id})
            events.append(EV.order_event(view.user_id, "CANCELED", "CANCELED", view.id, now))
        note_book_change(db, market.symbol, {(v.side, v.price) for v in views})
        EV.append(db, events)
        db.many(_TAKER_ORDER, updates)
        journal.apply(db)
