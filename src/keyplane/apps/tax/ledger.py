"""The local ledger: a SQLite file of trades, deposits and withdrawals, plus sync cursors.

Trades are keyed by (account, market, id), since an exchange numbers its trades per market
(keyplane and Binance both start each market's trades at 1); transfers by (account, kind, id).
Storing the same row twice is a no-op: a sync can be run again, or resumed after an
interruption, without duplicates. A page of rows and the cursor that follows it commit in one
transaction. A trade's ``ref`` in a report is ``<account>:trade:<BASE>/<QUOTE>:<id>``.

Amounts are stored exactly: as integers counting units of ``10**-STORED`` (``figures.STORED`` =
10 decimals), so that a report reads them with no decimal parsing, or as decimal text when an
amount has more decimals or does not fit in 64 bits. ``trades()`` reads them back as ``Decimal``
(without trailing zeros: ``1.50`` is stored and read back as ``1.5``), ``rows()`` as the integers
of a report's scale (``scale()``), each event with the key that orders it (``Order``).

The file's format and its upgrades from earlier formats are in ``ledgerfile.py``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from keyplane.apps.tax import ledgerfile
from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.figures import DIGITS, MAX_SCALE, STORED, decimals, to_int
from keyplane.apps.tax.ledgerfile import INT64, REF, THIRD_FEE, WIDE, WIDE_TRANSFERS, amount, store
from keyplane.apps.tax.model import Trade, Transfer
from keyplane.apps.tax.prices import Row, TransferRow

TRADE_COLUMNS = f"source, {REF}, ts, base, quote, side, amount, cost, fee, fee_asset, fee_value"
TRANSFER_COLUMNS = "source, id, kind, ts, asset, amount, fee, txid, address"


@dataclass(frozen=True)
class Order:
    """``((ts - first) * 3 + place) * step + rowid`` orders the events as a report takes them: by
    time, deposits (place 0) before trades (1) before withdrawals (2), then in the order stored.
    ``in_sql``: whether every key fits in SQLite's 64 bits (else keys are made in Python)."""

    first: int
    step: int
    in_sql: bool

    def sql(self, place: int | str) -> str:
        return f"((ts - {self.first}) * 3 + {place}) * {self.step} + rowid"

    def key(self, ts: int, place: int, rowid: int) -> int:
        return ((ts - self.first) * 3 + place) * self.step + rowid


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._depth = 0
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if not ledgerfile.current(self._db):
                with self.transaction():
                    ledgerfile.upgrade(self._db, self.path)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise TaxError(f"{self.path}: cannot open the ledger ({e})") from None
        except BaseException:
            self._db.close()
            raise

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
        return self._insert("INSERT OR IGNORE INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def add_transfers(self, transfers: Iterable[Transfer]) -> int:
        """Insert transfers not yet stored; returns how many were new."""
        rows = [
            (t.source, t.kind, t.id, t.ts, t.asset, store(t.amount), store(t.fee), t.txid, t.address) for t in transfers
        ]
        return self._insert("INSERT OR IGNORE INTO transfers VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        with self.transaction():
            before = self._db.total_changes
            self._db.executemany(sql, rows)
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

    def check_report_currency(self, quote: str) -> None:
        """Raise ``TaxError`` unless some trade is in ``quote`` (as its base or its quote): values
        come only from the ledger's own prices, so in a currency that was never traded (a fiat
        currency on a crypto exchange) every disposal would be worth 0. An empty ledger passes."""
        one = "SELECT NOT EXISTS (SELECT 1 FROM trades) OR EXISTS (SELECT 1 FROM trades WHERE ? IN (quote, base))"
        if self._db.execute(one, (quote,)).fetchone()[0]:
            return
        quotes = [
            r[0] for r in self._db.execute("SELECT quote FROM trades GROUP BY quote ORDER BY count(*) DESC LIMIT 5")
        ]
        raise TaxError(
            f"no trade in the ledger is in {quote}, so nothing could be valued in it (valuation in a currency "
            f"you did not trade, such as a fiat currency, is not supported yet); use --quote {quotes[0]}"
            + (f" (the ledger's quote currencies: {', '.join(quotes)})" if len(quotes) > 1 else "")
        )

    def scale(self) -> tuple[int, bool]:
        """The scale a report of this ledger counts in (``figures.py``), and whether any amount is
        stored as decimal text. Raises ``TaxError`` naming an amount that no scale up to
        ``MAX_SCALE`` holds."""
        scale, wide = STORED, False
        for table, where, columns in (
            ("trades", WIDE, f"{REF}, amount, cost, fee, fee_value"),
            ("transfers", WIDE_TRANSFERS, "source || ':' || kind || ':' || id, amount, fee"),
        ):
            for ref, *values in self._db.execute(f"SELECT {columns} FROM {table} WHERE {where}"):
                wide = True
                for v in values:
                    if type(v) is str:
                        d = Decimal(v)
                        if decimals(d) > MAX_SCALE or d.adjusted() >= DIGITS - MAX_SCALE:
                            raise TaxError(
                                f"{ref}: the amount {v} has more than {MAX_SCALE} decimals or "
                                f"{DIGITS - MAX_SCALE} digits, more than a report counts"
                            )
                        scale = max(scale, decimals(d))
        return scale, wide

    def order(self) -> Order | None:
        """The ``Order`` of this ledger's events; None if it has none."""
        # One aggregate per statement: SQLite then reads each from its index's end (or the rowid's).
        one = self._db.execute
        ids = [one(f"SELECT max(rowid) FROM {t}").fetchone()[0] or 0 for t in ("trades", "transfers")]
        firsts = [one(f"SELECT min(ts) FROM {t}").fetchone()[0] for t in ("trades", "transfers")]
        lasts = [one(f"SELECT max(ts) FROM {t}").fetchone()[0] for t in ("trades", "transfers")]
        if all(f is None for f in firsts):
            return None
        first = min(int(f) for f in firsts if f is not None)
        last = max(int(x) for x in lasts if x is not None)
        step = 1 << max(ids).bit_length()
        return Order(first, step, ((last - first) * 3 + 3) * step < INT64)

    def size(self) -> int:
        """About how many events the ledger holds (rows are never deleted: exactly, as a rule)."""
        one = self._db.execute
        return sum(int(one(f"SELECT max(rowid) FROM {t}").fetchone()[0] or 0) for t in ("trades", "transfers"))

    def markets(self) -> list[tuple[str, str, str]]:
        """Every ``(source, base, quote)`` traded, skipping through the primary key one at a time."""
        one = self._db.execute
        step = "SELECT source, base, quote FROM trades WHERE (source, base, quote) > (?, ?, ?) ORDER BY 1, 2, 3 LIMIT 1"
        out: list[tuple[str, str, str]] = []
        market = one("SELECT source, base, quote FROM trades ORDER BY 1, 2, 3 LIMIT 1").fetchone()
        while market is not None:
            out.append(market)
            market = one(step, market).fetchone()
        return out

    def reads_prices(self, quote: str) -> bool:
        """Whether some trade needs another asset's price for sure, as the indexes show: one between
        two assets other than ``quote``, or a fee in a third asset of unknown value. (A fee paid on
        nothing needs one too; the report finds such a trade on its way.)"""
        if any(quote not in market[1:] for market in self.markets()):
            return True
        third = f"SELECT 1 FROM trades INDEXED BY trades_third_fee WHERE {THIRD_FEE} AND fee_value IS NULL LIMIT 1"
        return self._db.execute(third).fetchone() is not None

    def assets(self, quote: str, *, weighed: bool = False) -> dict[str, int]:
        """Every asset with a pool (all but ``quote``), with the number of events that touch it if
        ``weighed`` (else 1). Read from the indexes: the markets by skipping through the primary
        key, one at a time, and their sizes by counting its entries."""
        weight: dict[str, int] = {}
        one = self._db.execute
        count = "SELECT count(*) FROM trades WHERE source = ? AND base = ? AND quote = ?"
        for market in self.markets():
            n = int(one(count, market).fetchone()[0]) if weighed else 1
            for a in market[1:]:
                weight[a] = weight.get(a, 0) + n
        third = f"SELECT fee_asset, count(*) FROM trades INDEXED BY trades_third_fee WHERE {THIRD_FEE} GROUP BY 1"
        for a, n in [*one(third), *one("SELECT asset, count(*) FROM transfers GROUP BY asset")]:
            weight[a] = weight.get(a, 0) + (int(n) if weighed else 1)
        weight.pop(quote, None)
        return weight

    def rows(
        self, order: Order, scale: int, wide: bool, assets: frozenset[str] | None = None, *, trades: bool = True
    ) -> list[Row | TransferRow]:
        """The events that touch ``assets`` (all if None) in key order, amounts at ``scale``; only
        the transfers if not ``trades``. Trades are read in one scan of their table, which is
        cheaper than index order."""
        where, args = "", list(assets or ())
        marks = ",".join("?" * len(args))
        if assets is not None:
            where = f" WHERE base IN ({marks}) OR quote IN ({marks}) OR fee_asset IN ({marks})"
        query = f"SELECT %s, {TRADE_COLUMNS} FROM trades NOT INDEXED{where}"
        rows = self._read(query, 1, order, args * 3) if trades else []
        where = "" if assets is None else f" WHERE asset IN ({marks})"
        place = "CASE kind WHEN 'deposit' THEN 0 ELSE 2 END"
        transfers = self._read(f"SELECT %s, {TRANSFER_COLUMNS} FROM transfers{where}", place, order, args)
        if wide or scale != STORED:
            factor = 10 ** (scale - STORED)

            def at_scale(v: Any) -> Any:
                return v * factor if type(v) is int else None if v is None else to_int(Decimal(v), scale)

            rows = [(*r[:7], *map(at_scale, r[7:10]), r[10], at_scale(r[11])) for r in rows]
            transfers = [(*r[:6], *map(at_scale, r[6:8]), *r[8:]) for r in transfers]
        new = tuple.__new__
        events: list[Row | TransferRow] = list(map(new, repeat(Row), rows))  # type: ignore[arg-type]
        events += map(new, repeat(TransferRow), transfers)  # type: ignore[arg-type]
        events.sort(key=itemgetter(0))  # in storing order, not time order; a sorted run costs one pass
        return events

    def _read(self, query: str, place: int | str, order: Order, args: list[str]) -> list[tuple[Any, ...]]:
        if order.in_sql:
            return self._db.execute(query % order.sql(place), args).fetchall()
        # Keys beyond 64 bits: made here, from the time, the place and the rowid.
        cur = self._db.execute(query % f"ts, {place}, rowid", args)
        return [(order.key(ts, p, rowid), *rest) for ts, p, rowid, *rest in cur]

    def counts(self) -> dict[str, int]:
        out = {
            "trades": int(self._db.execute("SELECT count(*) FROM trades").fetchone()[0]),
            "deposits": 0,
            "withdrawals": 0,
        }
        out.update(
            (kind + "s", int(n)) for kind, n in self._db.execute("SELECT kind, count(*) FROM transfers GROUP BY kind")
        )
        return out
