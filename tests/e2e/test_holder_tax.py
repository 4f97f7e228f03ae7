"""``keyplane tax sync`` of real trades, deposits and a withdrawal on a live keyplane server, an
interrupted sync that resumes without duplicates, then ``keyplane tax report`` checked by hand."""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from keyplane.apps.tax.ledger import Ledger
from keyplane.apps.tax.sync import Syncer
from keyplane.client import ccxt_exchange
from keyplane.client.errors import ExchangeUnreachable
from kptest.exchange import ExchangeServer, clear_books, exchange_server, wait_for
from kptest.holder import Account, account, clean_env, keyplane, new_key, profile_env

pytestmark = pytest.mark.e2e
ETH_ADDR = "0x" + "cd" * 20


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings(withdraw_step_s=0.1)) as srv:
        clear_books(srv.services)
        yield srv


def ex(url: str, acct: Account) -> Any:
    return ccxt_exchange(url, acct.api_key, acct.secret, timeout=10000)


@pytest.fixture(scope="module")
def history(xs: ExchangeServer) -> tuple[Account, list[dict[str, Any]]]:
    """Alice buys BTC twice (as taker) and sells some (as taker), and withdraws ETH."""
    alice = account(xs, ("read", "trade"), USDT="100000", ETH="1")
    bob = account(xs, ("read", "trade"), BTC="2", USDT="100000")
    a, b = ex(xs.url, alice), ex(xs.url, bob)
    b.create_order("BTC/USDT", "limit", "sell", 0.1, 60000)
    a.create_order("BTC/USDT", "market", "buy", 0.1)
    b.create_order("BTC/USDT", "limit", "sell", 0.2, 61000)
    a.create_order("BTC/USDT", "market", "buy", 0.2)
    b.create_order("BTC/USDT", "limit", "buy", 0.15, 62000)
    a.create_order("BTC/USDT", "market", "sell", 0.15)
    w = new_key(xs, alice, ("read", "withdraw"), ips=["127.0.0.1/32"])
    ex(xs.url, w).withdraw("ETH", 0.4, ETH_ADDR)
    assert wait_for(lambda: a.fetch_withdrawals("ETH")[0]["status"] == "ok", 15)
    trades = [t["info"] for t in a.fetch_my_trades("BTC/USDT")]
    assert len(trades) == 3
    return alice, trades


class Interrupting:
    """A ccxt exchange whose network fails after ``calls`` history requests, like a cut link."""

    def __init__(self, inner: Any, calls: int) -> None:
        self._inner, self._left = inner, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("fetch_") and name != "fetch_time":

            def counted(*args: Any, **kwargs: Any) -> Any:
                self._left -= 1
                if self._left < 0:
                    import ccxt

                    raise ccxt.NetworkError("connection reset")
                return attr(*args, **kwargs)

            return counted
        return attr


def rows(path: Path) -> list[tuple[Any, ...]]:
    with Ledger(path) as lg:
        return sorted((t.source, t.id, t.ts, t.side, t.amount, t.cost, t.fee) for t in lg.trades()) + sorted(
            (t.source, t.id, t.kind, t.amount, t.fee) for t in lg.transfers()
        )


def test_interrupted_sync_resumes_without_duplicates(xs, history, tmp_path) -> None:
    alice, _trades = history
    since = int((dt.datetime.now(dt.UTC) - dt.timedelta(days=200)).timestamp() * 1000)
    once = tmp_path / "once.sqlite"
    with Ledger(once) as lg:
        Syncer(lg, "alice", ex(xs.url, alice), since_ms=since, page_limit=1).run()
    broken = tmp_path / "broken.sqlite"
    stored = []
    for cut in (2, 6):  # cut in the middle of the trades, then in the middle of the transfers
        with Ledger(broken) as lg:
            syncer = Syncer(lg, "alice", Interrupting(ex(xs.url, alice), cut), since_ms=since, page_limit=1)
            with pytest.raises(ExchangeUnreachable):
                syncer.run()
            stored.append(lg.counts())
    assert 0 < stored[0]["trades"] < 3  # the pages before the cut were committed
    assert stored[1]["trades"] == 3 and stored[1]["withdrawals"] == 0
    with Ledger(broken) as lg:
        Syncer(lg, "alice", ex(xs.url, alice), since_ms=since, page_limit=1).run()
        again = Syncer(lg, "alice", ex(xs.url, alice), since_ms=since, page_limit=1).run()
        assert (again.trades, again.deposits, again.withdrawals) == (0, 0, 0)
        assert lg.counts() == {"trades": 3, "deposits": 2, "withdrawals": 1}
    assert rows(broken) == rows(once)


def test_sync_then_report_by_hand(xs, history, tmp_path) -> None:
    alice, trades = history
    env = clean_env(tmp_path, profile_env("alice", xs.url, alice))
    ledger = tmp_path / "ledger.sqlite"
    res = keyplane(env, "tax", "sync", "--ledger", str(ledger))
    assert res.returncode == 0, res.stderr
    assert "alice: 3 new trade(s), 2 deposit(s), 1 withdrawal(s)" in res.stdout
    requests = int(re.search(r"alice: .*\((\d+) requests\)", res.stdout).group(1))  # type: ignore[union-attr]
    assert requests <= 3 + len(ex(xs.url, alice).load_markets())  # markets, one per symbol, one per kind
    res = keyplane(env, "tax", "sync", "--ledger", str(ledger))
    assert "alice: 0 new trade(s), 0 deposit(s), 0 withdrawal(s)" in res.stdout  # idempotent

    year = dt.datetime.now(dt.UTC).year
    out = tmp_path / "gains.csv"
    res = keyplane(
        env, "tax", "report", "--method", "fifo", "--year", str(year), "--out", str(out), "--ledger", str(ledger)
    )
    assert res.returncode == 0, res.stderr
    with out.open() as f:
        report = list(csv.DictReader(f))

    # By hand, FIFO: the two buys are lots (commission in BTC reduces the units, in USDT adds to
    # the cost); the sale takes 0.15 BTC from the first lot, then the second.
    buys = [t for t in trades if t["isBuyer"]]
    (sale,) = [t for t in trades if not t["isBuyer"]]
    lots = []
    for t in sorted(buys, key=lambda t: t["time"]):
        units, cost = Decimal(t["qty"]), Decimal(t["quoteQty"])
        if t["commissionAsset"] == "BTC":
            units -= Decimal(t["commission"])
        else:
            cost += Decimal(t["commission"])
        lots.append([units, cost])
    proceeds = Decimal(sale["quoteQty"])
    sold = Decimal(sale["qty"])
    if sale["commissionAsset"] == "USDT":
        proceeds -= Decimal(sale["commission"])
    else:
        sold += Decimal(sale["commission"])
    basis, left = Decimal(0), sold
    for units, cost in lots:
        take = min(left, units)
        basis += cost if take == units else (cost * take / units).quantize(Decimal("1e-10"))
        left -= take
        if not left:
            break
    (row,) = report
    assert (row["asset"], Decimal(row["amount"]), row["holding_period"]) == ("BTC", sold, "short")
    assert Decimal(row["proceeds"]) == proceeds
    assert Decimal(row["cost_basis"]) == basis
    assert Decimal(row["gain"]) == proceeds - basis
    assert row["matched_lots"].count("alice:trade:") == 2
    summary = (tmp_path / "gains.summary.csv").read_text().splitlines()
    assert summary[-1].startswith(f"TOTAL,{row['proceeds']},{row['cost_basis']},{row['gain']},")

    res = keyplane(env, "tax", "report", "--method", "hifo", "--out", str(tmp_path / "h.csv"), "--ledger", str(ledger))
    assert res.returncode == 0
    res = keyplane(env, "tax", "report", "--method", "median", "--ledger", str(ledger))
    assert (
        res.returncode == 2
        and res.stderr.strip() == "error: unknown tax method 'median' (use one of: fifo, lifo, hifo, average)"
    )
