"""The local ledger: a SQLite file of trades, deposits and withdrawals, plus sync cursors.

Trades are keyed by (account, market, id), since an exchange numbers its trades per market
(keyplane and Binance both start each market's trades at 1); transfers by (account, kind, id).
Storing the same row twice is a no-op: a sync can be run again, or resumed after an
interruption, without duplicates. A page of rows and the cursor that follows it commit in one
transaction. A trade's ``ref`` in a report is ``<account>:trade:<BASE>/<QUOTE>:<id>``.

Amounts are stored exactly: as integers counting units of ``10**-SCALE`` (``scaled.SCALE`` = 10
decimals), so that a report reads them with no decimal parsing, or as decimal text when an amount
has more decimals or does not fit in 64 bits. ``trades()`` reads them back as ``Decimal`` (without
trailing zeros: ``1.50`` is stored and read back as ``1.5``), ``scaled_trades()`` as integers.

The file's format is ``PRAGMA user_version`` (``SCHEMA_VERSION``). Opening a ledger of an earlier
format upgrades it in place, in one transaction. Formats 0 and 1 keyed trades by (account, id)
alone, so a trade whose id another market had already used was dropped: the upgrade rebuilds the
key and resets the trade cursors, so the next sync fetches every trade again and stores the ones
that were missing (those already stored are not stored twice).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from itertools import islice, repeat
from operator import itemgetter, lt
from pathlib import Path

from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.model import Trade, Transfer
from keyplane.apps.tax.scaled import SCALE, OwnRow, Row, TransferRow, to_decimal

SCHEMA_VERSION = 2  # PRAGMA user_version; 0: amounts as decimal text; 1: trades keyed without their market
WIDE = "typeof(amount)='text' OR typeof(cost)='text' OR typeof(fee)='text' OR typeof(fee_value)='text'"
WIDE_TRANSFERS = "typeof(amount)='text' OR typeof(fee)='text'"

# Amount columns have no declared type, so SQLite keeps what is stored: an INTEGER (the amount
# in units of 10**-SCALE) or, for an amount that is not a whole number of such units or does not
# fit in 64 bits, its exact decimal TEXT. The partial indexes list the rows with any TEXT amount,
# so a report knows at once whether the whole ledger is in integers.
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
INDEXES = f"""
CREATE INDEX IF NOT EXISTS trades_ts ON trades (ts);
CREATE INDEX IF NOT EXISTS trades_wide ON trades (ts) WHERE {WIDE};
CREATE INDEX IF NOT EXISTS transfers_wide ON transfers (ts) WHERE {WIDE_TRANSFERS};
CREATE TABLE IF NOT EXISTS cursors (
    source TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (source, stream)
);
"""
_INT64 = 1 << 63
REF = "source || ':trade:' || id"  # a trade's ref, as the Decimal engine writes it
# A trade that reads no price and touches no third asset's pool (``Ledger.only_usual_trades``),
# with the report currency as the parameter ``q``.
_USUAL = (
    "quote = :q AND base != :q AND (fee = 0 OR fee_asset IS NULL"
    " OR ((fee_asset = :q OR fee_asset = base) AND fee_value IS NOT NULL)"
    " OR (fee_asset = base AND amount != 0) OR (fee_asset = :q AND cost != 0))"
)
MAX_DIGITS = 40  # digits before the point of the largest amount the integer engine takes
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)  # scaleb in it never rounds


class NotScaled(Exception):
    """The ledger holds an amount with more than ``SCALE`` decimals: no scaled-integer report."""


def store(d: Decimal) -> int | str:
    """An amount as stored: scaled ``int`` when exact and within 64 bits, else its decimal text."""
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {d}")
    n = scaled(d)
    return n if n is not None and -_INT64 <= n < _INT64 else str(d)


def scaled(d: Decimal) -> int | None:
    """``d`` in units of ``10**-SCALE``, or None if it has more decimals than that, or is
    ``10**MAX_DIGITS`` or more (the ``Decimal`` engine takes such a ledger)."""
    if not d:
        return 0
    if not d.is_finite() or d.adjusted() >= MAX_DIGITS:
        return None
    q = d.scaleb(SCALE, _EXACT)
    n = int(q)
    return n if n == q else None


def amount(value: int | str) -> Decimal:
    """A stored amount as an exact ``Decimal``, without trailing zeros."""
    return Decimal(value) if type(value) is str else to_decimal(int(value))


def _scaled_text(value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    n = scaled(Decimal(value))
    if n is None:
        raise NotScaled(value)
    return n


def _migrate_text(value: str | None) -> int | str | None:
    return None if value is None else store(Decimal(value))


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._depth = 0
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._open()
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise TaxError(f"{self.path}: cannot open the ledger ({e})") from None
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        """Create the tables, or bring a ledger of an earlier format up to date: in one transaction,
        so that an interrupted upgrade leaves the file as it was."""
        if self._version() == SCHEMA_VERSION:
            return
        with self.transaction():
            version = self._version()  # again, under the write lock: another process may have done it
            if version == SCHEMA_VERSION:
                return
            if version > SCHEMA_VERSION:
                raise TaxError(
                    f"{self.path}: the ledger's format ({version}) is newer than this keyplane's "
                    f"({SCHEMA_VERSION}); upgrade keyplane to read it"
                )
            exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='trades'").fetchone()
            if exists and version == 0:
                self._migrate_from_text()
            elif exists:
                self._rekey_trades()
            if exists:
                self._reset_trade_cursors()
            else:
                self._run_script(TABLES.format(trades="trades", transfers="transfers"))
            self._run_script(INDEXES)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _run_script(self, script: str) -> None:
        # ``executescript`` would commit the open transaction first: one statement at a time instead.
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)

    def _migrate_from_text(self) -> None:
        """Format 0 stored every amount as decimal text: copy the rows into the current tables,
        amounts converted by ``store``, in their order (rowid breaks ties between equal times)."""
        self._db.create_function("kp_store", 1, _migrate_text, deterministic=True)
        self._run_script(TABLES.format(trades="trades_new", transfers="transfers_new"))
        self._db.execute(
            "INSERT INTO trades_new SELECT source, id, ts, base, quote, side, kp_store(amount), kp_store(cost), "
            "kp_store(fee), fee_asset, kp_store(fee_value), order_id FROM trades ORDER BY rowid"
        )
        self._db.execute(
            "INSERT INTO transfers_new SELECT source, kind, id, ts, asset, kp_store(amount), kp_store(fee), "
            "txid, address FROM transfers ORDER BY rowid"
        )
        for table in ("trades", "transfers"):
            self._db.execute(f"DROP TABLE {table}")
            self._db.execute(f"ALTER TABLE {table}_new RENAME TO {table}")

    def _rekey_trades(self) -> None:
        """Format 1 keyed trades by (source, id): copy them into a table keyed by (source, base,
        quote, id), in their order, amounts as they are."""
        self._run_script(TABLES.format(trades="trades_new", transfers="transfers"))
        self._db.execute("INSERT INTO trades_new SELECT * FROM trades ORDER BY rowid")
        self._db.execute("DROP TABLE trades")
        self._db.execute("ALTER TABLE trades_new RENAME TO trades")

    def _reset_trade_cursors(self) -> None:
        """Make the next sync fetch every trade again: under the old key, some were dropped while
        their cursor moved past them. Transfers were keyed right, so their cursors stay."""
        cursors = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='cursors'").fetchone()
        if cursors:
            self._db.execute("DELETE FROM cursors WHERE stream LIKE 'trades:%' OR stream LIKE 'idtrades:%'")

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
                store(t.amount),
                store(t.cost),
                store(t.fee),
                t.fee_asset,
                None if t.fee_value is None else store(t.fee_value),
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
            (t.source, t.kind, t.id, t.ts, t.asset, store(t.amount), store(t.fee), t.txid, t.address) for t in transfers
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
        """Every trade in time order, with exact ``Decimal`` amounts."""
        cur = self._db.execute(
            "SELECT source,id,ts,base,quote,side,amount,cost,fee,fee_asset,fee_value,order_id "
            "FROM trades ORDER BY ts, rowid"
        )
        new, dec = tuple.__new__, amount
        for s, i, ts, b, q, side, a, c, fee, fa, fv, oid in cur:
            yield new(Trade, (s, i, ts, b, q, side, dec(a), dec(c), dec(fee), fa, None if fv is None else dec(fv), oid))

    def transfers(self) -> Iterator[Transfer]:
        cur = self._db.execute(
            "SELECT source,id,kind,ts,asset,amount,fee,txid,address FROM transfers ORDER BY ts, rowid"
        )
        for s, i, kind, ts, asset, a, fee, txid, addr in cur:
            yield Transfer(s, i, kind, ts, asset, amount(a), amount(fee), txid, addr)

    def scaled_trades(self) -> list[Row]:
        """Every trade in time order, amounts in units of ``10**-SCALE``, as ``scaled.Row``s.

        Raises ``NotScaled`` if an amount has more decimals than that (``trades()`` reads it)."""
        cur = self._db.execute(
            f"SELECT source, {REF}, ts, base, quote, side, amount, cost, fee, fee_asset, fee_value "
            "FROM trades ORDER BY ts, rowid"
        )
        new = tuple.__new__
        if self._db.execute(f"SELECT 1 FROM trades WHERE {WIDE} LIMIT 1").fetchone() is None:
            return list(map(new, repeat(Row), cur.fetchall()))  # type: ignore[arg-type]  # all in C
        f = _scaled_text
        return [new(Row, (*r[:6], f(r[6]), f(r[7]), f(r[8]), r[9], f(r[10]))) for r in cur]  # type: ignore[misc]

    def scaled_transfers(self) -> list[TransferRow]:
        """``transfers()`` as ``scaled.TransferRow``s; raises ``NotScaled`` as ``scaled_trades``."""
        cur = self._db.execute(
            "SELECT source,id,kind,ts,asset,amount,fee,txid,address FROM transfers ORDER BY ts, rowid"
        )
        f = _scaled_text
        return [TransferRow(s, i, k, ts, a, f(am), f(fee), tx, ad) for s, i, k, ts, a, am, fee, tx, ad in cur]  # type: ignore[arg-type]

    def only_usual_trades(self, quote: str) -> bool:
        """Whether no event reads a price or touches a third asset's pool (``scaled.ScaledEngine``):
        no transfers, and only trades of an asset other than ``quote`` against ``quote`` whose fee,
        if any, is in their base or ``quote``, with a known value or on a non-zero amount of that
        asset (which gives its value). In such a ledger an asset's pool needs only its own trades."""
        other = self._db.execute(f"SELECT 1 FROM trades WHERE NOT ({_USUAL}) LIMIT 1", {"q": quote}).fetchone()
        return other is None and not self.has_transfers()

    def check_report_currency(self, quote: str) -> None:
        """Raise ``TaxError`` unless some trade is in ``quote`` (as its base or its quote): values
        come only from the ledger's own prices, so in a currency that was never traded (a fiat
        currency on a crypto exchange) every disposal would be worth 0. An empty ledger passes."""
        if self._db.execute("SELECT 1 FROM trades LIMIT 1").fetchone() is None:
            return
        q = "SELECT 1 FROM trades WHERE quote = ? LIMIT 1"
        if (
            self._db.execute(q, (quote,)).fetchone()
            or self._db.execute(q.replace("quote =", "base ="), (quote,)).fetchone()
        ):
            return
        quotes = [
            r[0] for r in self._db.execute("SELECT quote FROM trades GROUP BY quote ORDER BY count(*) DESC LIMIT 5")
        ]
        raise TaxError(
            f"no trade in the ledger is in {quote}, so nothing could be valued in it (valuation in a currency "
            f"you did not trade, such as a fiat currency, is not supported yet); use --quote {quotes[0]}"
            + (f" (the ledger's quote currencies: {', '.join(quotes)})" if len(quotes) > 1 else "")
        )

    def has_transfers(self) -> bool:
        return self._db.execute("SELECT 1 FROM transfers LIMIT 1").fetchone() is not None

    def all_integers(self) -> bool:
        """Whether every amount is stored as a scaled integer (no decimal text at all)."""
        return (
            self._db.execute(f"SELECT 1 FROM trades WHERE {WIDE} LIMIT 1").fetchone() is None
            and self._db.execute(f"SELECT 1 FROM transfers WHERE {WIDE_TRANSFERS} LIMIT 1").fetchone() is None
        )

    def trade_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM trades").fetchone()[0])

    def bases(self) -> list[str]:
        """The distinct base assets of the trades, sorted."""
        return sorted(r[0] for r in self._db.execute("SELECT DISTINCT base FROM trades"))

    def base_counts(self) -> dict[str, int]:
        return {b: int(n) for b, n in self._db.execute("SELECT base, count(*) FROM trades GROUP BY base")}

    def order_key(self) -> tuple[int, int] | None:
        """``(first, step)`` such that ``(ts - first) * step + rowid`` orders the trades as the
        reports do (by time, then by the order they were stored) and stays within 63 bits; None if
        the ledger is empty or spans too long a time for that."""
        # One aggregate per statement: SQLite then reads each from its index's end.
        last_id = self._db.execute("SELECT max(rowid) FROM trades").fetchone()[0]
        first = self._db.execute("SELECT min(ts) FROM trades").fetchone()[0]
        last = self._db.execute("SELECT max(ts) FROM trades").fetchone()[0]
        if last_id is None or first is None or last is None or last_id < 1:
            return None
        step = 1 << int(last_id).bit_length()
        return (int(first), step) if (last - first) * step + last_id < _INT64 else None

    def own_trades(self, asset: str, quote: str, first: int, step: int) -> list[OwnRow]:
        """The trades of the base ``asset`` in a ledger with ``all_integers``, in the order
        ``scaled_trades`` reads them, as ``scaled.OwnRow``s:
        ``(key, source, ref, ts, buy, amount, cost, fee, fee_in, fee_value)``, where ``key`` is
        ``(ts - first) * step + rowid`` (see ``order_key``), ``buy`` is 1 or 0 and ``fee_in`` says
        where the fee is: 0 nowhere (no fee, or no fee asset), 1 in ``asset``, 2 in ``quote``, and
        -1 for a trade that is not usual (see ``only_usual_trades``), which the caller must not run
        on its own. Only what the engine needs, read in one scan of the table: cheaper than index
        order, and it checks the trades on the way, where ``only_usual_trades`` is a scan of its own."""
        cur = self._db.execute(
            f"SELECT (ts - {int(first)}) * {int(step)} + rowid, source, {REF}, ts, side = 'buy',"
            f" amount, cost, fee, CASE WHEN NOT ({_USUAL}) THEN -1 WHEN fee = 0 OR fee_asset IS NULL THEN 0"
            " WHEN fee_asset = base THEN 1 ELSE 2 END, fee_value FROM trades NOT INDEXED WHERE base = :a",
            {"a": asset, "q": quote},
        )
        rows: list[OwnRow] = cur.fetchall()
        keys = list(map(itemgetter(0), rows))
        if not all(map(lt, keys, islice(keys, 1, None))):  # stored out of time order: sort (keys are unique)
            rows.sort(key=itemgetter(0))
        return rows

    def counts(self) -> dict[str, int]:
        out = {"trades": int(self._db.execute("SELECT count(*) FROM trades").fetchone()[0])}
        for kind in ("deposit", "withdrawal"):
            n = self._db.execute("SELECT count(*) FROM transfers WHERE kind=?", (kind,)).fetchone()[0]
            out[kind + "s"] = int(n)
        return out
