"""Wiring: build every service once from the settings, and hand them to the app and the CLI.

Domains add their services here (one attribute each), so routes and commands get them from one
place without globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keyplane.accounts.identity import Identity
from keyplane.accounts.service import AccountService
from keyplane.db import Database
from keyplane.exchange.service import ExchangeService
from keyplane.keys.master import MasterKeys
from keyplane.keys.service import KeyService
from keyplane.settings import Settings


@dataclass
class Services:
    settings: Settings
    db: Database
    master: MasterKeys
    keys: KeyService
    accounts: AccountService
    # Services of other domains, by name (e.g. "exchange"), registered by their builders below.
    extra: dict[str, Any] = field(default_factory=dict)
    # Console sign-in, sessions and 2FA (accounts/identity.py).
    identity: Identity | None = None
    # The reference exchange: markets, orders, wallet, market data (exchange/service.py).
    exchange: ExchangeService | None = None

    def close(self) -> None:
        self.db.dispose()


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = Database(settings)
    if migrate:
        db.migrate()
    master = MasterKeys(settings)
    accounts = AccountService(db)
    return Services(
        settings=settings,
        db=db,
        master=master,
        keys=KeyService(db, settings, master),
        accounts=accounts,
        identity=Identity(db, settings, master, accounts),
        exchange=ExchangeService.from_settings(db, settings),
    )
