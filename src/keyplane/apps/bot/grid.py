"""The grid's pure logic: levels, the first placement, what to do after a fill, client order ids.

A grid of N price levels from ``lower`` to ``upper`` (evenly spaced) keeps one level empty: the one
nearest the price. Levels below it hold buys, levels above it hold sells, each for
``quote_per_level`` worth of the base asset. When a buy at level i fills, a sell goes to level
i+1 (the empty one); when a sell at level i fills, a buy goes to level i-1. Level i is then the
empty one. So every filled buy is followed by a sell one step higher, which is the grid's profit.

Client order ids are deterministic: ``kpg-<grid id>-<level>-<generation>``. The state records the
id *before* the order is sent, so after a crash the bot asks the exchange for that id instead of
placing a second order. The grid id hashes the grid's parameters *and* the account it trades on
(profile, exchange and server), so the same grid on a second account is another grid, with its
own state file and its own ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from decimal import Decimal, localcontext
from typing import Any, Literal

from keyplane.apps.money import CONTEXT

Side = Literal["buy", "sell"]


class GridError(ValueError):
    pass


@dataclass(frozen=True)
class GridConfig:
    symbol: str  # ccxt form, BTC/USDT
    lower: Decimal
    upper: Decimal
    levels: int
    quote_per_level: Decimal
    account: str = ""  # where the grid trades: "<profile>@<exchange> <server>", or "dry-run <server>"

    def __post_init__(self) -> None:
        if self.levels < 3 or self.levels > 200:
            raise GridError("--levels must be between 3 and 200")
        if not (0 < self.lower < self.upper):
            raise GridError("--lower must be positive and below --upper")
        if self.quote_per_level <= 0:
            raise GridError("--quote-per-level must be positive")

    @property
    def grid_id(self) -> str:
        return self._hash(with_account=bool(self.account))

    @property
    def legacy_grid_id(self) -> str:
        """The id an earlier keyplane gave this grid, from its parameters alone (no account)."""
        return self._hash(with_account=False)

    def _hash(self, *, with_account: bool) -> str:
        params = {k: str(v) for k, v in asdict(self).items() if with_account or k != "account"}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]

    def prices(self) -> list[Decimal]:
        with localcontext(CONTEXT):  # not the thread's context, which ccxt changes
            step = (self.upper - self.lower) / (self.levels - 1)
            return [self.lower + step * i for i in range(self.levels)]


@dataclass
class Level:
    index: int
    price: Decimal
    side: Side | None = None
    status: str = "idle"  # idle | pending (id recorded, not yet acknowledged) | open
    gen: int = 0
    cid: str | None = None
    order_id: str | None = None


@dataclass
class GridState:
    grid_id: str
    symbol: str
    levels: list[Level]
    fills: int = 0
    dry_run: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "grid_id": self.grid_id,
            "symbol": self.symbol,
            "fills": self.fills,
            "dry_run": self.dry_run,
            "history": self.history[-200:],
            "levels": [{**asdict(lv), "price": str(lv.price)} for lv in self.levels],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GridState:
        levels = [Level(**{**lv, "price": Decimal(lv["price"])}) for lv in doc["levels"]]
        return cls(doc["grid_id"], doc["symbol"], levels, int(doc["fills"]), bool(doc["dry_run"]), doc["history"])

    def open_levels(self) -> list[Level]:
        return [lv for lv in self.levels if lv.status in ("open", "pending")]


def release(level: Level) -> None:
    """Mark ``level`` empty once its order is filled or canceled (its generation stays, so the next
    order there gets a new id)."""
    level.status, level.side, level.order_id = "idle", None, None


def client_order_id(grid_id: str, level: int, gen: int) -> str:
    return f"kpg-{grid_id}-{level:03d}-{gen:05d}"


def initial_sides(prices: list[Decimal], market: Decimal) -> list[Side | None]:
    """Buys below the level nearest ``market``, sells above it, nothing on it."""
    nearest = min(range(len(prices)), key=lambda i: (abs(prices[i] - market), i))
    return ["buy" if i < nearest else "sell" if i > nearest else None for i in range(len(prices))]


def assign(level: Level, side: Side, grid_id: str) -> Level:
    """Give ``level`` a new order (recorded as pending) with the next deterministic id."""
    level.gen += 1
    level.side = side
    level.status = "pending"
    level.cid = client_order_id(grid_id, level.index, level.gen)
    level.order_id = None
    return level


def after_fill(state: GridState, filled: Level) -> Level | None:
    """Mark ``filled`` empty and return the level that gets the opposite order, if it is free."""
    side = filled.side
    release(filled)
    state.fills += 1
    target = filled.index + 1 if side == "buy" else filled.index - 1
    if not 0 <= target < len(state.levels):
        return None
    level = state.levels[target]
    if level.status != "idle":
        return None
    return assign(level, "sell" if side == "buy" else "buy", state.grid_id)


def fill_order(levels: list[Level]) -> list[Level]:
    """The order to process fills found together: buys from the highest price down, then sells
    from the lowest price up, so each replacement lands on a level that is already empty."""
    buys = sorted((lv for lv in levels if lv.side == "buy"), key=lambda lv: -lv.index)
    sells = sorted((lv for lv in levels if lv.side == "sell"), key=lambda lv: lv.index)
    return buys + sells
