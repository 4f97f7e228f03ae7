"""``tax sync`` against an in-memory exchange that numbers trades per market (as keyplane and
Binance do): no trade is lost to another market's id, a ledger of an earlier format heals on the
next sync without duplicates, and a first sync of a small account on keyplane takes a handful of
requests instead of a walk through every 90-day window since 2017."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.ledger import Ledger
from keyplane.apps.tax.ledgerfile import SCHEMA_VERSION
from keyplane.apps.tax.sync import DEFAULT_SINCE_MS, Syncer

NOW = 1_780_000_000_000
DAY = 86_400_000
MARKETS = {s: {"symbol": s, "base": s.split("/")[0], "quote": "USDT", "spot": True} for s in ("BTC/USDT", "ETH/USDT")}


class Exchange:
    """A keyplane-like ccxt exchange: trade ids per market, transfers in windows of at most 90
    days, or (on a keyplane server) everything since a ``startTime`` given alone."""

    id = "binance"

    def __init__(self, keyplane: bool = True) -> None:
        self.options = {"keyplaneServer": keyplane}
        self.markets = MARKETS
        self.calls = 0
        t0 = NOW - 3 * DAY
        self.trades = {
            "BTC/USDT": [self._trade("BTC/USDT", 1, t0, "buy"), self._trade("BTC/USDT", 2, t0 + 1000, "sell")],
            "ETH/USDT": [self._trade("ETH/USDT", 1, t0 + 2000, "buy")],  # id 1 again: another market
        }
        self.deposits = [
            {"id": "d1", "timestamp": t0 - DAY, "currency": "USDT", "amount": 1000.0, "status": "ok", "info": {}}
        ]

    @staticmethod
    def _trade(symbol: str, tid: int, ts: int, side: str) -> dict[str, Any]:
        info = {"qty": "0.1", "quoteQty": "100", "commission": "0", "commissionAsset": "USDT", "price": "1000"}
        return {"id": str(tid), "symbol": symbol, "timestamp": ts, "side": side, "info": info, "order": str(tid)}

    def load_markets(self) -> dict[str, Any]:
        self.calls += 1
        return self.markets

    def fetch_my_trades(self, symbol: str, since: int | None, limit: int, params: dict[str, Any] | None = None) -> Any:
        self.calls += 1
        rows = self.trades[symbol]
        if params and "fromId" in params:
            rows = [t for t in rows if int(t["id"]) >= params["fromId"]]
        elif since is not None:
            rows = [t for t in rows if t["timestamp"] >= since]
        return rows[:limit]

    def _transfers(self, rows: list[dict[str, Any]], since: int | None, limit: int, params: dict[str, Any]) -> Any:
        self.calls += 1
        if since is not None:  # ccxt sends startTime and an endTime at most 90 days on
            start, end = since, min(params.get("until", since + 90 * DAY), since + 90 * DAY)
        else:
            assert "until" not in params
            start, end = params["startTime"], NOW
        found = [x for x in rows if start <= x["timestamp"] <= end]
        offset = params.get("offset", 0)
        return found[offset : offset + limit]

    def fetch_deposits(self, code: None, since: int | None, limit: int, params: dict[str, Any]) -> Any:
        return self._transfers(self.deposits, since, limit, params)

    def fetch_withdrawals(self, code: None, since: int | None, limit: int, params: dict[str, Any]) -> Any:
        return self._transfers([], since, limit, params)


def sync(ledger: Ledger, ex: Exchange) -> Any:
    return Syncer(ledger, "alice", ex, now_ms=lambda: NOW).run()


def test_trades_with_the_same_id_in_two_markets_are_both_kept(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        stats = sync(lg, Exchange())
        assert stats.trades == 3
        assert sorted((t.base, t.id) for t in lg.trades()) == [("BTC", "1"), ("BTC", "2"), ("ETH", "1")]
        assert sync(lg, Exchange()).trades == 0  # and a second sync stores nothing twice


def test_a_first_sync_on_keyplane_takes_a_few_requests_not_a_walk_since_2017(tmp_path: Path) -> None:
    walked, direct = Exchange(keyplane=False), Exchange(keyplane=True)
    with Ledger(tmp_path / "a.sqlite") as a, Ledger(tmp_path / "b.sqlite") as b:
        before, after = sync(a, walked), sync(b, direct)
        assert a.counts() == b.counts() == {"trades": 3, "deposits": 1, "withdrawals": 0}
    windows = -(-(NOW - DEFAULT_SINCE_MS) // (90 * DAY))
    # 1 load_markets + 2 markets + deposits and withdrawals.
    assert before.requests == walked.calls == 3 + 2 * windows  # 77 here: the walk through 90-day windows
    assert after.requests == direct.calls == 3 + 2  # one open-ended query per kind
    # The next sync starts from the cursors: again 5 requests, nothing new.
    with Ledger(tmp_path / "b.sqlite") as b:
        again = sync(b, Exchange(keyplane=True))
        assert (again.requests, again.trades, again.deposits) == (5, 0, 0)


def _downgrade_to_format_1(path: Path) -> None:
    """Rewrite the trades table as format 1 keyed it, (source, id), as a ledger of that version is."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.execute(
        "CREATE TABLE trades_v1 (source TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, base TEXT NOT NULL,"
        " quote TEXT NOT NULL, side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), amount NOT NULL, cost NOT NULL,"
        " fee NOT NULL DEFAULT 0, fee_asset TEXT, fee_value, order_id TEXT, PRIMARY KEY (source, id))"
    )
    db.execute("INSERT OR IGNORE INTO trades_v1 SELECT * FROM trades ORDER BY rowid")  # the collision, as it was
    db.execute("DROP TABLE trades")
    db.execute("ALTER TABLE trades_v1 RENAME TO trades")
    db.execute("CREATE INDEX trades_ts ON trades (ts)")
    db.execute("PRAGMA user_version=1")
    db.execute("COMMIT")
    db.close()


def test_a_ledger_that_lost_trades_to_the_old_key_heals_on_the_next_sync(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path) as lg:
        sync(lg, Exchange())
    _downgrade_to_format_1(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM trades").fetchone()[0] == 2  # ETH/USDT #1 was dropped
    assert db.execute("SELECT count(*) FROM cursors WHERE stream LIKE 'idtrades:%'").fetchone()[0] == 2
    db.close()
    with Ledger(path) as lg:  # the upgrade: new key, trade cursors reset, transfer cursors kept
        assert lg.counts()["trades"] == 2
        assert lg.cursor("alice", "idtrades:BTC/USDT") is None and lg.cursor("alice", "deposits") is not None
        stats = sync(lg, Exchange())
        assert stats.trades == 1 and stats.deposits == 0  # the lost trade, and nothing twice
        assert sorted((t.base, t.id) for t in lg.trades()) == [("BTC", "1"), ("BTC", "2"), ("ETH", "1")]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_an_unknown_symbol_is_an_error_of_its_own_not_a_traceback(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        syncer = Syncer(lg, "alice", Exchange(), symbols=["DOGE/USDT"], now_ms=lambda: NOW)
        with pytest.raises(TaxError, match="unknown symbol"):
            syncer.run()


def test_a_report_in_a_currency_never_traded_is_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from keyplane.apps.tax.cli import app

    path = tmp_path / "l.sqlite"
    with Ledger(path) as lg:
        sync(lg, Exchange())
        with pytest.raises(TaxError, match=r"no trade in the ledger is in EUR.*use --quote USDT"):
            lg.check_report_currency("EUR")
        lg.check_report_currency("USDT")
        lg.check_report_currency("ETH")  # a traded asset: its trades give prices
    out = tmp_path / "gains.csv"
    res = CliRunner().invoke(app, ["report", "--quote", "eur", "--ledger", str(path), "--out", str(out)])
    assert res.exit_code == 2 and res.stderr.startswith("error: no trade in the ledger is in EUR")
    assert not out.exists()
    res = CliRunner().invoke(app, ["report", "--ledger", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists()
