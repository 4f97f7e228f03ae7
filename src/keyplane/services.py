"""Wiring: build every service once from the settings, and hand them to the app and the CLI.

Domains add their services here (one attribute each), so routes and commands get them from one
place without globals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exc

from keyplane.accounts.identity import Identity
from keyplane.accounts.service import AccountService
from keyplane.db import Database
from keyplane.errors import KeyplaneError, ServiceUnavailable
from keyplane.exchange.service import ExchangeService
from keyplane.keys.service import KeyService
from keyplane.masterkeys import MasterKeys
from keyplane.settings import Settings


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    db: Database
    master: MasterKeys
    keys: KeyService
    accounts: AccountService
    # Console sign-in, sessions and 2FA (accounts/identity.py).
    identity: Identity | None = None
    # The reference exchange: markets, orders, wallet, market data (exchange/service.py).
    exchange: ExchangeService | None = None

    def close(self) -> None:
        self.db.dispose()


class StartupError(KeyplaneError):
    """The server cannot start on this data directory or database; the message says why, in one line."""

    code = "startup_failed"
    status = 503


def _one_line(error: BaseException) -> str:
    cause: BaseException = error
    while isinstance(cause, (ServiceUnavailable, exc.StatementError)) and cause.__cause__ is not None:
        cause = cause.__cause__
    if isinstance(cause, exc.DBAPIError) and cause.orig is not None:
        cause = cause.orig
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Every service, on a checked data directory and database. Raises :class:`StartupError` (one
    line naming the directory or database and the problem) if either cannot be used."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise StartupError(f"cannot create the data directory {settings.data_dir}: {e.strerror or e}") from e
    db = Database(settings)
    try:
        return _build(settings, db, migrate)
    except OSError as e:
        db.dispose()
        where = e.filename or settings.data_dir
        raise StartupError(f"cannot use the data directory {settings.data_dir} ({where}): {e.strerror or e}") from e
    except (exc.SQLAlchemyError, ServiceUnavailable) as e:
        db.dispose()
        raise StartupError(f"cannot use {db.describe()}: {_one_line(e)}") from e
    except BaseException:  # StartupError, a master-key error...: no pooled connection outlives it
        db.dispose()
        raise


def _build(settings: Settings, db: Database, migrate: bool) -> Services:
    if migrate:
        db.migrate()
    master = MasterKeys.from_settings(db, settings)
    master.ensure_active()
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
