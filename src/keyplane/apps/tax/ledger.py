"""The local ledger: a SQLite file of trades, deposits and withdrawals, plus sync cursors.

Rows are keyed by (account, id), so storing the same trade twice is a no-op: a sync can be run
again, or resumed after an interruption, without duplicates. Amounts are stored as decimal text and
read back as ``Decimal``. A page of rows and the cursor that follows it commit in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from keyplane.apps.tax.model import Trade, Transfer

SCHEMA = """
CREATE TABLE IF NOT EXISTS trades (
    source TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, base TEXT NOT NULL, quote TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), amount TEXT NOT NULL, cost TEXT NOT NULL,
    fee TEXT NOT NULL DEFAULT '0', fee_asset TEXT, fee_value TEXT, order_id TEXT,
    PRIMARY KEY (source, id)
);
CREATE INDEX IF NOT EXISTS trades_ts ON trades (ts);
CREATE TABLE IF NOT EXISTS transfers (
    source TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('deposit', 'withdrawal')), id TEXT NOT NULL,
    ts INTEGER NOT NULL, asset TEXT NOT NULL, amount TEXT NOT NULL, fee TEXT NOT NULL DEFAULT '0',
    txid TEXT, address TEXT,
    PRIMARY KEY (source, kind, id)
);
CREATE TABLE IF NOT EXISTS cursors (
    source TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (source, stream)
);
"""


def _d(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._depth = 0

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (nested calls join the outer one)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    def add_trades(self, trades: Iterable[Trade]) -> int:
        """Insert trades not yet stored; returns how many were new."""
        rows = [
            (
                t.source,
                t.id,
                t.ts,
                t.base,
                t.quote,
                t.side,
                str(t.amount),
                str(t.cost),
                str(t.fee),
                t.fee_asset,
                None if t.fee_value is None else str(t.fee_value),
                t.order_id,
            )
            for t in trades
        ]
        with self.transaction():
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            return self._db.total_changes - before

    def add_transfers(self, transfers: Iterable[Transfer]) -> int:
        rows = [
            (t.source, t.kind, t.id, t.ts, t.asset, str(t.amount), str(t.fee), t.txid, t.address) for t in transfers
        ]
        with self.transaction():
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO transfers VALUES (?,?,?,?,?,?,?,?,?)", rows)
            return self._db.total_changes - before

    def cursor(self, source: str, stream: str) -> int | None:
        row = self._db.execute("SELECT ts FROM cursors WHERE source=? AND stream=?", (source, stream)).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, source: str, stream: str, ts: int) -> None:
        with self.transaction():
            self._db.execute(
                "INSERT INTO cursors VALUES (?,?,?) ON CONFLICT (source, stream) DO UPDATE SET ts=excluded.ts",
                (source, stream, ts),
            )

    def trades(self) -> Iterator[Trade]:
        cur = self._db.execute(
            "SELECT source,id,ts,base,quote,side,amount,cost,fee,fee_asset,fee_value,order_id "
            "FROM trades ORDER BY ts, rowid"
        )
        new, zero, dec = tuple.__new__, Decimal(0), Decimal  # the fast path: a report reads millions
        for s, i, ts, b, q, side, amount, cost, fee, fa, fv, oid in cur:
            fee_d = zero if fee == "0" else dec(fee)
            yield new(
                Trade, (s, i, ts, b, q, side, dec(amount), dec(cost), fee_d, fa, None if fv is None else dec(fv), oid)
            )

    def transfers(self) -> Iterator[Transfer]:
        cur = self._db.execute(
            "SELECT source,id,kind,ts,asset,amount,fee,txid,address FROM transfers ORDER BY ts, rowid"
        )
        for s, i, kind, ts, asset, amount, fee, txid, addr in cur:
            yield Transfer(s, i, kind, ts, asset, Decimal(amount), Decimal(fee), txid, addr)

    def counts(self) -> dict[str, int]:
        out = {"trades": int(self._db.execute("SELECT count(*) FROM trades").fetchone()[0])}
        for kind in ("deposit", "withdrawal"):
            n = self._db.execute("SELECT count(*) FROM transfers WHERE kind=?", (kind,)).fetchone()[0]
            out[kind + "s"] = int(n)
        return out
