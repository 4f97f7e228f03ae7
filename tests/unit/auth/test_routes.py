from __future__ import annotations

from fastapi import APIRouter, FastAPI

from keyplane.auth.routes import RouteTable, signed
from keyplane.keys.scopes import Scope


def _app() -> FastAPI:
    inner = APIRouter()

    @inner.post("/orders")
    @signed(Scope.TRADE, weight=2, symbol_restricted=True)
    async def place() -> None: ...

    @inner.get("/orders/{order_id}")
    @signed(Scope.READ)
    async def show(order_id: int) -> None: ...

    @inner.get("/public")
    async def public() -> None: ...

    outer = APIRouter()
    outer.include_router(inner, prefix="/v9")
    app = FastAPI()
    app.include_router(outer)
    return app


def test_table_walks_nested_routers_with_prefixes():
    table = RouteTable.from_routes(_app().routes)
    rule = table.match("POST", "/v9/orders", {"type": "http", "path": "/v9/orders"})
    assert rule is not None
    assert rule.scope is Scope.TRADE and rule.weight == 2 and rule.symbol_restricted
    assert table.match("GET", "/v9/orders", {"type": "http", "path": "/v9/orders"}) is None
    by_id = table.match("GET", "/v9/orders/12", {"type": "http", "path": "/v9/orders/12"})
    assert by_id is not None and by_id.scope is Scope.READ
    assert table.match("GET", "/v9/public", {"type": "http", "path": "/v9/public"}) is None
    assert len(table) == 2
