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
from keyplane.exchange import triggers as TR
from keyplane.exchange.errors import (
    CancelRejected,
    DuplicateOrder,
    ExchangeError,
    InsufficientBalance,
    KeyLimitExceeded,
    WouldTakeLiquidity,
    WouldTrigger,
)
from keyplane.exchange.fills import apply_fills, fee
from keyplane.exchange.history import OPEN, ORDER_COLS, OrderListView, OrderReads, OrderView, find_list, open_in
from keyplane.exchange.markets import Market, plain
from keyplane.exchange.matching import Plan, Resting, Taker, plan
from keyplane.exchange.params import NewOrder, NewOrderList, check_notional
from keyplane.exchange.sql import Raw, write
from keyplane.keys.format import mask

# Re-exported: callers import them from here.
__all__ = [
    "CANCEL_RESTRICTIONS", "OPEN", "ListPlacement", "OrderListView", "OrderService", "OrderView", "Placement",
    "RecvWindowPassed", "Replaced",
    "check_deadline", "fee", "reservation",
]  # fmt: skip

# The opposite side, best first, only as far as the taker's limit reaches (``sort_key <= :lim``):
# an order that does not cross reads no row at all.
_BOOK_SIDE = (
    "SELECT order_id, user_id, price, remaining, sort_key, sibling FROM ex_book WHERE symbol = :s AND side = :side "
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
_LAST_PRICE = "SELECT price FROM ex_trades WHERE symbol = :s ORDER BY id DESC LIMIT 1"
# Conditional orders: arming one, the ones that trades between :lo and :hi can fire (every trailing
# one: its extreme follows each trade), a trailing order's new extreme, and disarming a fired one.
_INSERT_TRIGGER = (
    "INSERT INTO ex_triggers (order_id, user_id, symbol, side, direction, stop_price, trail_bips, extreme, held) "
    "VALUES (:o, :u, :s, :side, :d, :p, :b, :x, :h)"
)
_REACHABLE = (
    f"SELECT {TR.COLUMNS} FROM ex_triggers WHERE symbol = :s AND (trail_bips IS NOT NULL "
    "OR (direction = 'DOWN' AND stop_price >= :lo) OR (direction = 'UP' AND stop_price <= :hi)) ORDER BY order_id"
)
_TRAIL = "UPDATE ex_triggers SET extreme = :x WHERE order_id = :o"
_DISARM = "DELETE FROM ex_triggers WHERE order_id = :o"
_UNARM = "DELETE FROM ex_triggers WHERE order_id = :id RETURNING held"
# Order lists: a new list, its legs linked to it and to each other, and the end of one.
_INSERT_LIST = (
    "INSERT INTO ex_order_lists (user_id, symbol, client_list_id, contingency, status, created_ms, updated_ms) "
    "VALUES (:u, :s, :c, 'OCO', 'EXEC_STARTED', :t, :t) RETURNING id"
)
_LINK_LEGS = "UPDATE ex_orders SET list_id = :l WHERE id = :o"
_LINK_BOOK = "UPDATE ex_book SET sibling = :x WHERE order_id = :o"
_LINK_TRIGGER = "UPDATE ex_triggers SET sibling = :x WHERE order_id = :o"
_END_LIST = (
    "UPDATE ex_order_lists SET status = 'ALL_DONE', updated_ms = :t WHERE id = :l AND status = 'EXEC_STARTED' "
    "RETURNING user_id"
)
_MAX_FIRED = 1000  # conditional orders fired in one transaction, cascades included
_FIRED_ORDER = (
    "UPDATE ex_orders SET executed_qty = :q, cum_quote = :c, status = :st, updated_ms = :t, working_ms = :t "
    "WHERE id = :id"
)
_TAKER_ORDER = "UPDATE ex_orders SET executed_qty = :q, cum_quote = :c, status = :st, updated_ms = :t WHERE id = :id"
_INSERT_ORDER = (
    "INSERT INTO ex_orders (user_id, key_id, symbol, side, type, tif, price, orig_qty, orig_quote_qty, executed_qty, "
    "cum_quote, status, client_order_id, stp, created_ms, updated_ms, stop_price, trailing_delta, working_ms) VALUES "
    "(:user_id, :key_id, :symbol, :side, :type, :tif, :price, :orig_qty, :orig_quote_qty, 0, 0, 'NEW', "
    ":client_order_id, :stp, :now, :now, :sp, :td, :w) RETURNING id"
)
# Cancelling: the book row goes, and tells what the order still held; an account's open orders in a
# market are the ones on its book.
_UNBOOK = "DELETE FROM ex_book WHERE order_id = :id RETURNING remaining"
_OPEN_IN_MARKET = f"SELECT {ORDER_COLS} FROM ex_orders WHERE {open_in(True)} ORDER BY id"
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
class ListPlacement:
    """An order list to place (:meth:`OrderService.place_list`), as :class:`Placement` is an order."""

    user_id: int
    order_list: NewOrderList
    key_id: str | None = None
    max_notional: Decimal | None = None
    not_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Replaced:
    """What :meth:`OrderService.cancel_replace` did with each half: the cancelled order, or why the
    cancel failed; the new order, or why it was refused, or None when it was not attempted."""

    canceled: OrderView | ExchangeError
    placed: OrderView | ExchangeError | None


def holding(order: NewOrder) -> int:
    """What an order locks when it is placed, before it trades: a limit order's (or a limit-type
    conditional order's) cost at its price; a sell its quantity; a market-type conditional buy its
    cost at the stop price (a trailing one without a stop price, nothing: its funds are checked
    when it fires)."""
    return reservation(order.market, order.side, order.price or order.stop_price, order.qty or 0)


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
        batch to write once; without, they are written here. Conditional orders that its trades
        fire run here too, in the same transaction."""
        # Last moment before anything is written, with the market lock held: a request that waited
        # past its recvWindow (for the lock, or for a database that went silent) is not applied.
        check_deadline(self.clock, req.not_after_s, "order")
        now = int(self.clock() * 1000)
        logs = deferred if deferred is not None else _Deferred()
        if req.order.conditional:
            view = self._arm(db, req, now, logs)
        else:
            view, prices, seq = self._execute(db, req, now, seq, logs)
            if prices:
                self._fire(db, req.order.market, prices, seq, now, logs)
        if deferred is None:
            logs.write(db)
        return view

    def _arm(self, db: Raw, req: Placement, now: int, logs: _Deferred, held: int | None = None) -> OrderView:
        """Store a conditional order with its armed trigger: funds locked (``held``, for a leg of
        an order list; else :func:`holding`), nothing matched."""
        user_id, order = req.user_id, req.order
        market = order.market
        row = db.one(_LAST_PRICE, {"s": market.symbol})
        last = int(row[0]) if row else None
        if TR.would_trigger(order.type, order.side, order.stop_price, last):
            raise WouldTrigger()
        qty = order.qty or 0
        if held is None:
            held = holding(order)
        if req.max_notional is not None:
            _check_key_limit(market, market.notional(qty, order.price or order.stop_price or last or 0),
                             req.max_notional, req.key_id)  # fmt: skip
        asset = market.quote.name if order.side == "BUY" else market.base.name
        have = db.one(_AVAILABLE, {"u": user_id, "a": asset})
        if (have[0] if have else 0) < held:
            raise InsufficientBalance()
        order_id = self._insert(db, req, now, working=False)
        way, start = TR.arm(order.type, order.side, order.stop_price, order.trailing_delta, last)
        db.execute(
            _INSERT_TRIGGER,
            {
                "o": order_id, "u": user_id, "s": market.symbol, "side": order.side, "d": way,
                "p": order.stop_price or None, "b": order.trailing_delta or None, "x": start, "h": held,
            },
        )  # fmt: skip
        journal = L.Journal(now)
        journal.move(f"order:{order_id}", asset, L.available(user_id), L.locked(user_id), held)
        journal.apply(db)
        logs.add(market.symbol, set(), [EV.order_event(user_id, "NEW", "NEW", order_id, now)])
        return self._view(order_id, req, now, None)

    def _insert(self, db: Raw, req: Placement, now: int, *, working: bool) -> int:
        order = req.order
        try:
            row = db.one(
                _INSERT_ORDER,
                {
                    "user_id": req.user_id, "key_id": req.key_id, "symbol": order.market.symbol, "side": order.side,
                    "type": order.type, "tif": order.tif, "price": order.price, "orig_qty": order.qty or 0,
                    "orig_quote_qty": order.quote_qty, "client_order_id": order.client_id, "stp": order.stp,
                    "now": now, "sp": order.stop_price, "td": order.trailing_delta, "w": now if working else None,
                },
            )  # fmt: skip
        except exc.IntegrityError as e:
            raise DuplicateOrder() from e
        assert row is not None
        return int(row[0])

    @staticmethod
    def _view(order_id: int, req: Placement, now: int, working_ms: int | None) -> OrderView:
        o = req.order
        return OrderView(
            order_id, req.user_id, o.market.symbol, o.side, o.type, o.tif, o.price, o.qty or 0, o.quote_qty, 0, 0,
            "NEW", o.client_id, o.stp, now, now, o.stop_price, o.trailing_delta, working_ms,
        )  # fmt: skip

    def _execute(
        self, db: Raw, req: Placement, now: int, seq: int | None, logs: _Deferred, fired: TR.Trigger | None = None
    ) -> tuple[OrderView, list[int], int | None]:
        """Match ``req`` as a taker and apply it: a new order, or with ``fired`` the conditional
        order whose trigger just fired (its row exists; the funds its trigger held are freed and
        it is reserved anew as the plain order it now is). Returns its view, the prices of the
        trades it made (in trade order) and the market's trade sequence after them."""
        user_id, order, key_id, max_notional = req.user_id, req.order, req.key_id, req.max_notional
        market = order.market
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
            return [Resting(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]

        p = plan(market, taker, fetch)
        if order.type == "LIMIT_MAKER" and p.fills:
            raise WouldTakeLiquidity()
        if order.tif == "FOK" and p.qty < (order.qty or 0):
            p = Plan(stopped=p.stopped or "fok")
        if order.type == "MARKET" and order.qty is not None and p.fills and fired is None:
            check_notional(market, market.notional(order.qty, p.fills[0].maker.price))
        spend_asset = market.quote.name if order.side == "BUY" else market.base.name
        if order.type == "MARKET":
            notional = order.quote_qty if order.qty is None else p.quote
        else:
            notional = market.notional(order.qty or 0, order.price)
        # A buy reserves the quote it may spend; a sell, the base it offers.
        # (a market sell by quote amount: the base that the plan sells for it)
        reserve = notional if order.side == "BUY" else p.qty if order.qty is None else order.qty
        if max_notional is not None:
            _check_key_limit(market, notional, max_notional, key_id)
        have = db.one(_AVAILABLE, {"u": user_id, "a": spend_asset})
        freed = fired.held if fired is not None else 0
        short = (have[0] if have else 0) + freed < reserve
        if short and fired is None:
            raise InsufficientBalance()

        journal = L.Journal(now)
        if fired is None:
            order_id = self._insert(db, req, now, working=True)
            view = self._view(order_id, req, now, now)
            events = [EV.order_event(user_id, "NEW", "NEW", order_id, now)]
        else:
            order_id = fired.order_id
            view = self._view(order_id, req, now, now)
            journal.move(f"order:{order_id}", spend_asset, L.locked(user_id), L.available(user_id), freed)
            events = [EV.order_event(user_id, "NEW", "NEW", order_id, now)]  # it starts to work
            if short:  # what its trigger held no longer pays for it at the market's price now
                view.status = "EXPIRED"
                events.append(EV.order_event(user_id, "EXPIRED", "EXPIRED", order_id, now))
                db.execute(_FIRED_ORDER, {"q": 0, "c": 0, "st": "EXPIRED", "t": now, "id": order_id})
                journal.apply(db)
                logs.add(market.symbol, set(), events)
                return view, [], seq
        ref = f"order:{order_id}"
        journal.move(ref, spend_asset, L.available(user_id), L.locked(user_id), reserve)
        if p.fills:
            if seq is None:
                row = db.one(_READ_SEQ, {"s": market.symbol})
                assert row is not None
                seq = int(row[0])
            apply_fills(db, journal, market, view, p.fills, seq, now, events)
            seq += len(p.fills)
            db.execute(_SET_SEQ, {"q": seq, "s": market.symbol})

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
        if fired is not None:
            args = {"q": p.qty, "c": p.quote, "st": view.status, "t": now, "id": order_id}
            db.execute(_FIRED_ORDER, args)
        elif view.status != "NEW":
            args = {"q": p.qty, "c": p.quote, "st": view.status, "t": now, "id": order_id}
            db.execute(_TAKER_ORDER, args)
        journal.apply(db)
        logs.add(market.symbol, touched, events)
        # A leg of an order list that trades cancels the other leg, if that is still open.
        partners = sorted({f.maker.sibling for f in p.fills if f.maker.sibling is not None})
        if partners:
            self._cancel_ids(db, market, partners, now, logs)
        return view, [f.maker.price for f in p.fills], seq

    def _fire(self, db: Raw, market: Market, prices: list[int], seq: int | None, now: int, logs: _Deferred) -> None:
        """Fire the conditional orders of ``market`` that trades at ``prices`` (in trade order)
        reach, oldest first, then the ones that their own trades reach, and so on. Each runs as
        the plain order it names; a trailing order that does not fire keeps its new extreme. After
        ``_MAX_FIRED`` in one transaction the rest stay armed for the next trade that reaches them."""
        fired = 0
        while prices and fired < _MAX_FIRED:
            lo, hi = TR.reach(prices)
            due: list[TR.Trigger] = []
            for r in db.all(_REACHABLE, {"s": market.symbol, "lo": lo, "hi": hi}):
                t = TR.Trigger(*r)
                fires, extreme = TR.step(t, prices)
                if fires and fired + len(due) < _MAX_FIRED:
                    due.append(t)
                elif extreme != t.extreme:
                    db.execute(_TRAIL, {"x": extreme, "o": t.order_id})
            if not due:
                return
            fired += len(due)
            prices = []  # the trades that the fired orders make are news to the triggers still armed
            canceled: set[int] = set()  # legs whose other leg fired first, in this batch
            for t in due:
                if t.order_id in canceled:
                    continue
                db.execute(_DISARM, {"o": t.order_id})
                if t.sibling is not None:  # the other leg of its order list goes first, freeing its funds
                    canceled.update(self._cancel_ids(db, market, [t.sibling], now, logs))
                row = db.one(f"SELECT {ORDER_COLS} FROM ex_orders WHERE id = :id", {"id": t.order_id})
                assert row is not None
                v = OrderView(*row)
                order = NewOrder(
                    market, v.side, v.type, v.tif, v.price, v.orig_qty, 0, v.client_order_id, v.stp, "FULL"
                )
                _, more, seq = self._execute(db, Placement(v.user_id, order.triggered()), now, seq, logs, t)
                prices += more

    # -- order lists ----------------------------------------------------------------------------

    def place_list(self, req: ListPlacement) -> OrderListView:
        """Place an OCO in one transaction: its list row and both legs, which lock together what
        the costlier leg needs (the leg on the book its own reservation, the armed leg the rest).
        Either leg refused (filters, funds, a limit maker that would take, a stop that would
        trigger at once) refuses the list; nothing of it is written."""
        order_list = req.order_list
        market = order_list.market
        with write(self.db) as db:
            self._lock_market(db, market.symbol)
            check_deadline(self.clock, req.not_after_s, "order list")
            now = int(self.clock() * 1000)
            try:
                row = db.one(_INSERT_LIST, {"u": req.user_id, "s": market.symbol, "c": order_list.client_list_id,
                                            "t": now})  # fmt: skip
            except exc.IntegrityError as e:
                raise DuplicateOrder("Duplicate order list sent.") from e
            assert row is not None
            list_id = int(row[0])
            legs = (order_list.below, order_list.above)
            holds = [holding(leg) for leg in legs]
            # What the armed legs lock beyond the leg on the book, in leg order, up to the larger need.
            left = max(holds) - sum(h for leg, h in zip(legs, holds, strict=True) if not leg.conditional)
            logs = _Deferred()
            views: list[OrderView] = []
            for leg, need in zip(legs, holds, strict=True):
                placement = Placement(req.user_id, leg, req.key_id, req.max_notional)
                if leg.conditional:
                    held = min(left, need)
                    left -= held
                    views.append(self._arm(db, placement, now, logs, held))
                else:  # a LIMIT_MAKER: it rests, or the list is refused (it trades nothing)
                    views.append(self._execute(db, placement, now, None, logs)[0])
            a, b = views[0].id, views[1].id
            for v in views:
                v.list_id = list_id
            db.many(_LINK_LEGS, [{"l": list_id, "o": a, "x": b}, {"l": list_id, "o": b, "x": a}])
            db.many(_LINK_BOOK, [{"o": a, "x": b}, {"o": b, "x": a}])
            db.many(_LINK_TRIGGER, [{"o": a, "x": b}, {"o": b, "x": a}])
            logs.add(market.symbol, set(), [EV.list_event(req.user_id, "EXEC_STARTED", list_id, now)])
            logs.write(db)
        self._committed((market.symbol,))
        return OrderListView(list_id, req.user_id, market.symbol, order_list.client_list_id, "OCO", "EXEC_STARTED",
                             now, now, views)  # fmt: skip

    def cancel_list(
        self,
        user_id: int,
        market: Market,
        list_id: int | None,
        client_list_id: str | None,
        *,
        not_after_s: float | None = None,
    ) -> OrderListView:
        """Cancel the open legs of an order list of ``user_id`` in ``market``: ``CancelRejected``
        if there is no such list or it is already done."""
        with write(self.db) as db:
            self._lock_market(db, market.symbol)
            check_deadline(self.clock, not_after_s, "cancel")
            found = find_list(db, user_id, list_id, client_list_id)
            if found is None or found.symbol != market.symbol:
                raise CancelRejected("Unknown order list sent.")
            open_legs = [v for v in found.orders if v.is_open]
            if found.status != "EXEC_STARTED" or not open_legs:
                raise CancelRejected(f"Unknown order list sent: order list {found.id} is already done.")
            now = int(self.clock() * 1000)
            self._cancel_open(db, market, open_legs, now)
            found.status, found.updated_ms = "ALL_DONE", now
        self._committed((market.symbol,))
        return found

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

    def _cancel_ids(self, db: Raw, market: Market, ids: Sequence[int], now: int, logs: _Deferred) -> list[int]:
        """Cancel those of these orders that are still open (the other legs of order lists whose
        leg traded or fired), and end their lists; returns the ids cancelled."""
        views = [OrderView(*r) for i in ids if (r := db.one(f"SELECT {ORDER_COLS} FROM ex_orders WHERE id = :id",
                                                           {"id": i})) is not None]  # fmt: skip
        views = [v for v in views if v.is_open]
        self._cancel_open(db, market, views, now, logs, whole_lists=False)
        return [v.id for v in views]

    def _cancel_open(
        self,
        db: Raw,
        market: Market,
        views: Sequence[OrderView],
        now: int,
        logs: _Deferred | None = None,
        *,
        whole_lists: bool = True,
    ) -> None:
        """Cancel these open orders of ``market`` on ``db``'s transaction (the market locked): the
        one place a cancel is written. Each leaves the book (one book change for the levels they
        leave) or, armed, its trigger goes; each becomes CANCELED (its row, its event and its
        view), and what it still held moves back from locked to available. A leg of an order list
        ends the list and, with ``whole_lists`` (a cancel that the owner asked for), takes the
        list's other leg with it if that is open. With ``logs`` (a
        placement in progress) the book change and events go there; else they are written here."""
        journal = L.Journal(now)
        updates: list[dict[str, object]] = []
        events: list[dict[str, Any]] = []
        levels: set[tuple[str, int]] = set()
        views = list(views)
        lists = {v.list_id for v in views if v.list_id is not None}
        if lists and whole_lists:
            have = {v.id for v in views}
            for list_id in sorted(lists):
                for r in db.all(f"SELECT {ORDER_COLS} FROM ex_orders WHERE list_id = :l ORDER BY id", {"l": list_id}):
                    other = OrderView(*r)
                    if other.id not in have and other.is_open:
                        views.append(other)
                        have.add(other.id)
        for view in views:
            asset = market.quote.name if view.side == "BUY" else market.base.name
            if view.working_ms is None:  # an armed conditional order: its trigger goes
                row = db.one(_UNARM, {"id": view.id})
                assert row is not None  # the market is locked
                held = int(row[0])
            else:
                row = db.one(_UNBOOK, {"id": view.id})
                assert row is not None  # an open order rests on the book, and the market is locked
                held = reservation(market, view.side, view.price, int(row[0]))
                levels.add((view.side, view.price))
            journal.move(f"order:{view.id}", asset, L.locked(view.user_id), L.available(view.user_id), held)
            view.status, view.updated_ms = "CANCELED", now
            updates.append({"q": view.executed_qty, "c": view.cum_quote, "st": "CANCELED", "t": now, "id": view.id})
            events.append(EV.order_event(view.user_id, "CANCELED", "CANCELED", view.id, now))
        for list_id in sorted(lists):
            row = db.one(_END_LIST, {"l": list_id, "t": now})
            if row is not None:  # it was still executing
                events.append(EV.list_event(int(row[0]), "ALL_DONE", list_id, now))
        db.many(_TAKER_ORDER, updates)
        journal.apply(db)
        if logs is not None:
            logs.add(market.symbol, levels, events)
            return
        if levels:
            note_book_change(db, market.symbol, levels)
        EV.append(db, events)
