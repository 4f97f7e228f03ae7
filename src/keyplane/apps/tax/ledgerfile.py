"""The ledger file's format: its tables and indexes, how an amount is stored, and the upgrades
from every earlier format (``SCHEMA_VERSION``, kept in ``PRAGMA user_version``).

Formats 0 and 1 keyed trades by (account, id) alone, so a trade whose id another market had
already used was dropped: the upgrade rebuilds the key and resets the trade cursors, so the next
sync fetches every trade again and stores the ones that were missing (those already stored are
not stored twice).
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.figures import STORED, to_decimal, to_int

SCHEMA_VERSION = 3  # PRAGMA user_version; 0: amounts as decimal text; 1: trades keyed without their market;
# 2: no index of the fees paid in a third asset
WIDE = "typeof(amount)='text' OR typeof(cost)='text' OR typeof(fee)='text' OR typeof(fee_value)='text'"
WIDE_TRANSFERS = "typeof(amount)='text' OR typeof(fee)='text'"

# Amount columns have no declared type, so SQLite keeps what is stored: an INTEGER (the amount
# in units of 10**-STORED) or, for an amount that is not a whole number of such units or does not
# fit in 64 bits, its exact decimal TEXT. The partial indexes list the rows with any TEXT amount,
# so a report finds at once the amounts that set its scale.
TABLES = """
CREATE TABLE IF NOT EXISTS {trades} (
    source TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, base TEXT NOT NULL, quote TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), amount NOT NULL, cost NOT NULL,
    fee NOT NULL DEFAULT 0, fee_asset TEXT, fee_value, order_id TEXT,
    PRIMARY KEY (source, base, quote, id)
);
CREATE TABLE IF NOT EXISTS {transfers} (
    source TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('deposit', 'withdrawal')), id TEXT NOT NULL,
    ts INTEGER NOT NULL, asset TEXT NOT NULL, amount NOT NULL, fee NOT NULL DEFAULT 0,
    txid TEXT, address TEXT,
    PRIMARY KEY (source, kind, id)
);
"""
THIRD_FEE = "fee != 0 AND fee_asset != base AND fee_asset != quote"  # a fee in neither asset of its trade
INDEXES = f"""
CREATE INDEX IF NOT EXISTS trades_ts ON trades (ts);
CREATE INDEX IF NOT EXISTS trades_wide ON trades (ts) WHERE {WIDE};
CREATE INDEX IF NOT EXISTS transfers_wide ON transfers (ts) WHERE {WIDE_TRANSFERS};
CREATE INDEX IF NOT EXISTS trades_third_fee ON trades (fee_asset) WHERE {THIRD_FEE};
CREATE TABLE IF NOT EXISTS cursors (
    source TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (source, stream)
);
"""
INT64 = 1 << 63
REF = "source || ':trade:' || id"  # a trade's ref in a report


def store(d: Decimal) -> int | str:
    """An amount as stored: scaled ``int`` when exact and within 64 bits, else its decimal text."""
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {d}")
    n = to_int(d, STORED)
    return n if n is not None and -INT64 <= n < INT64 else str(d)


def amount(value: int | str) -> Decimal:
    """A stored amount as an exact ``Decimal``, without trailing zeros."""
    return Decimal(value) if type(value) is str else to_decimal(int(value), STORED)


def _migrate_text(value: str | None) -> int | str | None:
    return None if value is None else store(Decimal(value))


def upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables, or bring a ledger of an earlier format up to date, in the caller's write
    transaction (an interrupted upgrade leaves the file as it was)."""
    version = _version(db)  # under the write lock: another process may have done it already
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise TaxError(
            f"{path}: the ledger's format ({version}) is newer than this keyplane's "
            f"({SCHEMA_VERSION}); upgrade keyplane to read it"
        )
    exists = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='trades'").fetchone()
    if not exists:
        _run_script(db, TABLES.format(trades="trades", transfers="transfers"))
    elif version == 0:
        _migrate_from_text(db)
    elif version == 1:
        _rekey_trades(db)
    if exists and version < 2:
        _reset_trade_cursors(db)
    _run_script(db, INDEXES)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def current(db: sqlite3.Connection) -> bool:
    return _version(db) == SCHEMA_VERSION


def _version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # ``executescript`` would commit the open transaction first: one statement at a time instead.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _migrate_from_text(db: sqlite3.Connection) -> None:
    """Format 0 stored every amount as decimal text: copy the rows into the current tables,
    amounts converted by ``store``, in their order (rowid breaks ties between equal times)."""
    db.create_function("kp_store", 1, _migrate_text, deterministic=True)
    _rebuild(
        db,
        trades="source, id, ts, base, quote, side, kp_store(amount), kp_store(cost), kp_store(fee), fee_asset, "
        "kp_store(fee_value), order_id",
        transfers="source, kind, id, ts, asset, kp_store(amount), kp_store(fee), txid, address",
    )


def _rekey_trades(db: sqlite3.Connection) -> None:
    """Format 1 keyed trades by (source, id): copy them into a table keyed by (source, base,
    quote, id), in their order, amounts as they are."""
    _rebuild(db, trades="*")


def _rebuild(db: sqlite3.Connection, **columns: str) -> None:
    """Copy each table named (``trades``, ``transfers``) into a new one of the current format, in
    its order, the new table's columns from the ``columns`` given, and put it in the old one's place."""
    names = {table: f"{table}_new" if table in columns else table for table in ("trades", "transfers")}
    _run_script(db, TABLES.format(**names))
    for table, select in columns.items():
        db.execute(f"INSERT INTO {table}_new SELECT {select} FROM {table} ORDER BY rowid")
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


def _reset_trade_cursors(db: sqlite3.Connection) -> None:
    """Make the next sync fetch every trade again: under the old key, some were dropped while
    their cursor moved past them. Transfers were keyed right, so their cursors stay."""
    cursors = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='cursors'").fetchone()
    if cursors:
        db.execute("DELETE FROM cursors WHERE stream LIKE 'trades:%' OR stream LIKE 'idtrades:%'")
