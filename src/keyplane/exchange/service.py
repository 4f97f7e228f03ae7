"""The exchange behind the keys: one object that holds the markets and the three services.

Routes and commands reach every market operation through :class:`ExchangeService`, so all market
state stays behind it (the seam for partitioning markets across databases later).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from keyplane.db import Database
from keyplane.exchange.batching import GroupCommit
from keyplane.exchange.events import AccountEvents
from keyplane.exchange.marketdata import MarketData
from keyplane.exchange.markets import Asset, Market, load_config
from keyplane.exchange.orders import OrderService
from keyplane.exchange.sql import read, write
from keyplane.exchange.wallet import WalletService
from keyplane.settings import Settings


class ExchangeService:
    def __init__(
        self,
        db: Database,
        assets: dict[str, Asset],
        markets: dict[str, Market],
        *,
        withdraw_step_s: float = 2.0,
        demo: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.assets = assets
        self.markets = markets
        self.demo = demo
        self.orders = OrderService(db, clock)
        self.group_commit = GroupCommit(self.orders)
        self.wallet = WalletService(db, assets, withdraw_step_s, clock)
        self.data = MarketData(db, clock)
        self.events = AccountEvents(db)
        self._ensure_market_rows()

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> ExchangeService:
        assets, markets = load_config(settings.markets_file)
        return cls(db, assets, markets, withdraw_step_s=settings.withdraw_step_s, demo=settings.demo)

    def _ensure_market_rows(self) -> None:
        with write(self.db) as db:
            rows = [{"s": s} for s in self.markets]
            db.many("INSERT INTO ex_markets (symbol, trade_seq) VALUES (:s, 0) ON CONFLICT DO NOTHING", rows)

    def balances(self, user_id: int) -> dict[str, tuple[int, int]]:
        """asset -> (available, locked) in base units, for every listed asset."""
        with read(self.db) as db:
            rows = db.all("SELECT asset, available, locked FROM ex_balances WHERE user_id = :u", {"u": user_id})
        out = dict.fromkeys(self.assets, (0, 0))
        for asset, avail, locked in rows:
            out[asset] = (int(avail), int(locked))
        return out
