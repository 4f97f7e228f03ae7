"""Orders and an account's fills as stored, read back: what :class:`OrderService` answers for
``GET /api/v3/order``, ``openOrders``, ``allOrders`` and ``myTrades``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keyplane.db import Database
from keyplane.exchange.errors import OrderListNotFound, OrderNotFound
from keyplane.exchange.markets import Market
from keyplane.exchange.rows import AccountTrade
from keyplane.exchange.sql import Raw, read

OPEN = ("NEW", "PARTIALLY_FILLED")


@dataclass(slots=True)
class OrderView:
    """An order as stored, plus (after placement) the taker's own fills."""

    id: int
    user_id: int
    symbol: str
    side: str
    type: str
    tif: str
    price: int
    orig_qty: int
    orig_quote_qty: int
    executed_qty: int
    cum_quote: int
    status: str
    client_order_id: str
    stp: str
    created_ms: int
    updated_ms: int
    stop_price: int = 0
    trailing_delta: int = 0
    working_ms: int | None = None  # None while a conditional order waits for its trigger
    list_id: int | None = None  # its order list (OCO), if it has one
    fills: list[dict[str, int | str]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    @property
    def is_working(self) -> bool:
        """Open and working: on the book (an armed conditional order is open but not yet working)."""
        return self.is_open and self.working_ms is not None


ORDER_COLS = (
    "id, user_id, symbol, side, type, tif, price, orig_qty, orig_quote_qty, executed_qty, cum_quote, status, "
    "client_order_id, stp, created_ms, updated_ms, stop_price, trailing_delta, working_ms, list_id"
)


@dataclass(slots=True)
class OrderListView:
    """An order list (an OCO pair) and its orders, as stored."""

    id: int
    user_id: int
    symbol: str
    client_list_id: str
    contingency: str
    status: str  # EXEC_STARTED | ALL_DONE
    created_ms: int
    updated_ms: int
    orders: list[OrderView] = field(default_factory=list)


LIST_COLS = "id, user_id, symbol, client_list_id, contingency, status, created_ms, updated_ms"


def read_lists(db: Raw, where: str, args: dict[str, object]) -> list[OrderListView]:
    """The order lists that ``where`` selects, each with its orders (oldest first)."""
    lists = [OrderListView(*r) for r in db.all(f"SELECT {LIST_COLS} FROM ex_order_lists WHERE {where}", args)]
    if lists:
        by_id = {ol.id: ol for ol in lists}
        ids = ", ".join(str(int(i)) for i in by_id)  # integers from the database, not input
        for r in db.all(f"SELECT {ORDER_COLS} FROM ex_orders WHERE list_id IN ({ids}) ORDER BY id"):
            view = OrderView(*r)
            assert view.list_id is not None
            by_id[view.list_id].orders.append(view)
    return lists


def find_list(db: Raw, user_id: int, list_id: int | None, client_list_id: str | None) -> OrderListView | None:
    """An order list of ``user_id`` by id, else by its client id."""
    column, value = ("id", list_id) if list_id is not None else ("client_list_id", client_list_id)
    found = read_lists(db, f"user_id = :u AND {column} = :v", {"u": user_id, "v": value})
    return found[0] if found else None


def open_in(by_symbol: bool) -> str:
    """The WHERE clause of an account's (``:u``) open orders, in one market (``:s``) or all: the
    ones on the book and the ones whose trigger is armed."""
    where = "user_id = :u AND symbol = :s" if by_symbol else "user_id = :u"
    return (
        f"(id IN (SELECT order_id FROM ex_book WHERE {where}) "
        f"OR id IN (SELECT order_id FROM ex_triggers WHERE {where}))"
    )


class OrderReads:
    """The read side of :class:`~keyplane.exchange.orders.OrderService` (a mixin: it reads ``self.db``)."""

    db: Database

    def _find(
        self, db: Raw, user_id: int, symbol: str, order_id: int | None, client_id: str | None
    ) -> OrderView | None:
        column, value = ("id", order_id) if order_id is not None else ("client_order_id", client_id)
        row = db.one(
            f"SELECT {ORDER_COLS} FROM ex_orders WHERE user_id = :u AND {column} = :v", {"u": user_id, "v": value}
        )
        if row is None or row[2] != symbol:
            return None
        return OrderView(*row)

    def get(self, user_id: int, market: Market, order_id: int | None, client_id: str | None) -> OrderView:
        with read(self.db) as db:
            view = self._find(db, user_id, market.symbol, order_id, client_id)
        if view is None:
            raise OrderNotFound()
        return view

    def _views(self, where: str, args: dict[str, object]) -> list[OrderView]:
        """The orders that ``where`` (what follows ``WHERE``, ordering included) selects."""
        with read(self.db) as db:
            return [OrderView(*r) for r in db.all(f"SELECT {ORDER_COLS} FROM ex_orders WHERE {where}", args)]

    def open_orders(self, user_id: int, symbol: str | None) -> list[OrderView]:
        """Orders on the book and conditional orders waiting for their trigger, oldest first."""
        return self._views(open_in(symbol is not None) + " ORDER BY id", {"u": user_id, "s": symbol})

    # -- order lists ------------------------------------------------------------------------------

    def get_list(self, user_id: int, list_id: int | None, client_list_id: str | None) -> OrderListView:
        with read(self.db) as db:
            found = find_list(db, user_id, list_id, client_list_id)
        if found is None:
            raise OrderListNotFound()
        return found

    def all_lists(
        self,
        user_id: int,
        *,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[OrderListView]:
        """The account's order lists, oldest first, as Binance's ``allOrderList`` selects them:
        from ``from_id`` on (the times are then ignored), else within the times (the first
        ``limit`` from ``start_ms``, or the last up to ``end_ms``), else the latest ``limit``."""
        args: dict[str, object] = {"u": user_id, "n": limit}
        with read(self.db) as db:
            if from_id is not None:
                args["f"] = from_id
                return read_lists(db, "user_id = :u AND id >= :f ORDER BY id LIMIT :n", args)
            where = "user_id = :u"
            for cond, name, value in (("created_ms >= :a", "a", start_ms), ("created_ms <= :b", "b", end_ms)):
                if value is not None:
                    where += f" AND {cond}"
                    args[name] = value
            if start_ms is not None:
                return read_lists(db, f"{where} ORDER BY id LIMIT :n", args)
            return read_lists(db, f"{where} ORDER BY id DESC LIMIT :n", args)[::-1]

    def open_lists(self, user_id: int) -> list[OrderListView]:
        with read(self.db) as db:
            return read_lists(db, "user_id = :u AND status = 'EXEC_STARTED' ORDER BY id", {"u": user_id})

    def recent_orders(self, user_id: int, limit: int = 50) -> list[OrderView]:
        """The account's latest orders across markets, newest first."""
        return self._views("user_id = :u ORDER BY id DESC LIMIT :n", {"u": user_id, "n": limit})

    def all_orders(
        self,
        user_id: int,
        symbol: str,
        *,
        order_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[OrderView]:
        """The account's orders in ``symbol`` as Binance's ``allOrders`` selects them, oldest first:
        with ``start_ms`` and/or ``end_ms``, orders whose last update (``updateTime``) falls within
        them, the first ``limit`` from ``start_ms`` or else the last ``limit`` up to ``end_ms``
        (``order_id`` is then ignored); with ``order_id``, the first ``limit`` orders with an id at
        or above it; with neither, the latest ``limit``."""
        args: dict[str, object] = {"u": user_id, "s": symbol, "n": limit}
        where = "user_id = :u AND symbol = :s"
        if start_ms is not None or end_ms is not None:
            for cond, name, value in (("updated_ms >= :a", "a", start_ms), ("updated_ms <= :b", "b", end_ms)):
                if value is not None:
                    where += f" AND {cond}"
                    args[name] = value
            if start_ms is not None:
                return self._views(f"{where} ORDER BY updated_ms, id LIMIT :n", args)
            return self._views(f"{where} ORDER BY updated_ms DESC, id DESC LIMIT :n", args)[::-1]
        if order_id is not None:
            args["o"] = order_id
            return self._views(f"{where} AND id >= :o ORDER BY id LIMIT :n", args)
        return self._views(f"{where} ORDER BY id DESC LIMIT :n", args)[::-1]

    def my_trades(
        self,
        user_id: int,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        order_id: int | None = None,
        limit: int = 500,
    ) -> list[AccountTrade]:
        where = ["user_id = :u", "symbol = :s"]
        args: dict[str, object] = {"u": user_id, "s": symbol, "n": limit}
        for cond, name, value in (
            ("trade_id >= :f", "f", from_id), ("ts >= :a", "a", start_ms), ("ts <= :b", "b", end_ms),
            ("order_id = :o", "o", order_id),
        ):  # fmt: skip
            if value is not None:
                where.append(cond)
                args[name] = value
        ascending = from_id is not None or start_ms is not None
        cols = ", ".join(AccountTrade.names())
        order = "ASC" if ascending else "DESC"
        sql = f"SELECT {cols} FROM ex_fills WHERE {' AND '.join(where)} ORDER BY trade_id {order}, id LIMIT :n"
        with read(self.db) as db:
            rows = db.all(sql, args)
        out = [
            AccountTrade(tid, oid, p, q, qq, fee, fee_asset, ts, bool(buyer), bool(maker), i)
            for tid, oid, p, q, qq, fee, fee_asset, ts, buyer, maker, i in rows
        ]
        return out if ascending else out[::-1]
