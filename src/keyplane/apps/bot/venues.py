"""Where the grid's orders go: a live exchange through ccxt, or a paper venue for ``--dry-run``
that fills simulated orders against the live order book and needs no key.

Both raise the SDK's exceptions (``keyplane.client.errors``), so the runner handles one set.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from keyplane.client.ccxt_errors import translate
from keyplane.client.errors import ClientError


class OrderGone(ClientError):
    """The exchange does not know this client order id."""


class Venue(Protocol):
    def market_price(self) -> Decimal: ...

    def round_price(self, price: Decimal) -> Decimal: ...

    def round_amount(self, amount: Decimal) -> Decimal: ...

    def place(self, side: str, price: Decimal, amount: Decimal, cid: str) -> str:
        """Place a GTC limit order; returns the exchange's order id."""
        ...

    def open_cids(self) -> set[str]: ...

    def status(self, cid: str) -> str:
        """``open``, ``closed`` (filled) or ``canceled``; raises ``OrderGone`` if unknown."""
        ...

    def cancel(self, cid: str) -> None:
        """Cancel an open order; raises ``OrderGone`` if the exchange has no open order by that id."""
        ...


class CcxtVenue:
    def __init__(self, exchange: Any, symbol: str) -> None:
        self.ex, self.symbol = exchange, symbol
        self._call(self.ex.load_markets)
        if symbol not in self.ex.markets:
            raise ClientError(f"unknown symbol {symbol} on this exchange")

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import ccxt

        try:
            return fn(*args, **kwargs)
        except ccxt.OrderNotFound:
            raise OrderGone("order not found") from None
        except Exception as e:
            raise translate(e, self.ex) from None

    def restrictions(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call(self.ex.sapi_get_account_apirestrictions)
        return result

    def best_bid_ask(self) -> tuple[Decimal | None, Decimal | None]:
        book = self._call(self.ex.fetch_order_book, self.symbol, 5)
        bid, ask = (Decimal(repr(book[side][0][0])) if book[side] else None for side in ("bids", "asks"))
        return bid, ask

    def market_price(self) -> Decimal:
        bid, ask = self.best_bid_ask()
        if bid is None or ask is None:
            ticker = self._call(self.ex.fetch_ticker, self.symbol)
            last = ticker.get("last") or ticker.get("close")
            if last is None:
                raise ClientError(f"{self.symbol} has no price yet (empty book, no trades)")
            return Decimal(repr(last))
        return (bid + ask) / 2

    def round_price(self, price: Decimal) -> Decimal:
        return Decimal(self.ex.price_to_precision(self.symbol, float(price)))

    def round_amount(self, amount: Decimal) -> Decimal:
        return Decimal(self.ex.amount_to_precision(self.symbol, float(amount)))

    def place(self, side: str, price: Decimal, amount: Decimal, cid: str) -> str:
        order = self._call(
            self.ex.create_order,
            self.symbol,
            "limit",
            side,
            float(amount),
            float(price),
            {"newClientOrderId": cid, "timeInForce": "GTC"},
        )
        return str(order["id"])

    def open_cids(self) -> set[str]:
        orders = self._call(self.ex.fetch_open_orders, self.symbol)
        return {o.get("clientOrderId") for o in orders if o.get("clientOrderId")}

    def status(self, cid: str) -> str:
        order = self._call(self.ex.fetch_order, "", self.symbol, {"clientOrderId": cid})
        st = str(order.get("status") or "")
        return {"closed": "closed", "open": "open"}.get(st, "canceled")

    def cancel(self, cid: str) -> None:
        self._call(self.ex.cancel_order, "", self.symbol, {"origClientOrderId": cid})


class PaperVenue(CcxtVenue):
    """Simulated orders on a real book: a buy fills once the best ask is at or below its price, a
    sell once the best bid is at or above it. Public market data only: no key. Prices and amounts
    are read and rounded as on the live venue; orders never reach it."""

    def __init__(self, exchange: Any, symbol: str, orders: dict[str, dict[str, str]] | None = None) -> None:
        super().__init__(exchange, symbol)
        self.orders: dict[str, dict[str, str]] = orders if orders is not None else {}
        self._seq = len(self.orders)

    def place(self, side: str, price: Decimal, amount: Decimal, cid: str) -> str:
        if cid in self.orders:
            return self.orders[cid]["id"]
        self._seq += 1
        self.orders[cid] = {"id": f"paper-{self._seq}", "side": side, "price": str(price), "status": "open"}
        return self.orders[cid]["id"]

    def _match(self) -> None:
        bid, ask = self.best_bid_ask()
        for o in self.orders.values():
            if o["status"] != "open":
                continue
            price = Decimal(o["price"])
            if (o["side"] == "buy" and ask is not None and ask <= price) or (
                o["side"] == "sell" and bid is not None and bid >= price
            ):
                o["status"] = "closed"

    def open_cids(self) -> set[str]:
        self._match()
        return {cid for cid, o in self.orders.items() if o["status"] == "open"}

    def status(self, cid: str) -> str:
        if cid not in self.orders:
            raise OrderGone("order not found")
        return self.orders[cid]["status"]

    def cancel(self, cid: str) -> None:
        if self.orders.get(cid, {}).get("status") != "open":
            raise OrderGone("order not found")
        self.orders[cid]["status"] = "canceled"
