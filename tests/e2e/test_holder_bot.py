"""``keyplane bot grid`` on a live keyplane server: the start-up permission check, a live grid whose
levels fill and are replaced, a restart without duplicate orders, a dry run on the live book, and
a loud, clean, non-zero stop when the key is revoked mid-run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyplane.client import ccxt_exchange
from kptest.exchange import ExchangeServer, clear_books, exchange_server, wait_for
from kptest.holder import Account, account, clean_env, keyplane, new_key, profile_env

pytestmark = pytest.mark.e2e
GRID = ["--symbol", "BTCUSDT", "--lower", "59500", "--upper", "60500", "--levels", "5", "--quote-per-level", "50"]


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings()) as srv:
        yield srv


@pytest.fixture
def book(xs: ExchangeServer) -> Iterator[Account]:
    """A wide book around 60000 (bid 59000, ask 61000) from a market maker."""
    clear_books(xs.services)
    maker = account(xs, ("read", "trade"), USDT="100000", BTC="5")
    ex = ccxt_exchange(xs.url, maker.api_key, maker.secret, timeout=10000)
    ex.create_order("BTC/USDT", "limit", "buy", 0.01, 59000)
    ex.create_order("BTC/USDT", "limit", "sell", 0.01, 61000)
    yield maker
    clear_books(xs.services)


def cx(url: str, acct: Account) -> Any:
    return ccxt_exchange(url, acct.api_key, acct.secret, timeout=10000)


def start_bot(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "keyplane", "bot", "grid", *args],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def orders(ex: Any) -> dict[str, tuple[str, float, float]]:
    return {o["clientOrderId"]: (o["side"], o["price"], o["amount"]) for o in ex.fetch_open_orders("BTC/USDT")}


def test_refuses_a_key_that_can_withdraw_or_cannot_trade(xs: ExchangeServer, book: Account, tmp_path: Path) -> None:
    carol = account(xs, ("read",), USDT="100")
    wd = new_key(xs, carol, ("read", "trade", "withdraw"), ips=["127.0.0.1/32"])
    res = keyplane(clean_env(tmp_path, profile_env("w", xs.url, wd)), "bot", "grid", "--profile", "w", *GRID)
    assert res.returncode == 2 and "this key can withdraw" in res.stderr and "Traceback" not in res.stderr
    res = keyplane(clean_env(tmp_path, profile_env("r", xs.url, carol)), "bot", "grid", "--profile", "r", *GRID)
    assert res.returncode == 2 and "cannot trade" in res.stderr
    assert orders(cx(xs.url, carol)) == {}  # nothing was placed


def test_live_grid_fills_replaces_and_resumes(xs: ExchangeServer, book: Account, tmp_path: Path) -> None:
    carol = account(xs, ("read", "trade"), USDT="1000", BTC="0.01")
    taker = account(xs, ("read", "trade"), USDT="1000", BTC="0.01")
    env = clean_env(tmp_path, profile_env("carol", xs.url, carol))
    state = tmp_path / "grid.json"
    args = ["--profile", "carol", *GRID, "--interval", "0.3", "--state", str(state), "--on-stop", "leave"]
    bot = start_bot(env, *args, "--duration", "60", log=tmp_path / "bot1.log")
    mine, t = cx(xs.url, carol), cx(xs.url, taker)
    try:
        assert wait_for(lambda: len(orders(mine)) == 4, 30), (tmp_path / "bot1.log").read_text()
        placed = orders(mine)
        sides = sorted((side, price) for side, price, _ in placed.values())
        assert sides == [("buy", 59500.0), ("buy", 59750.0), ("sell", 60250.0), ("sell", 60500.0)]
        assert all(cid.startswith("kpg-") for cid in placed)
        # A taker sells into the bot's best bid: the buy at 59750 fills, a sell goes up at 60000.
        amount = next(a for s, p, a in placed.values() if p == 59750.0)
        t.create_order("BTC/USDT", "market", "sell", amount)
        assert wait_for(lambda: ("sell", 60000.0) in {(s, p) for s, p, _ in orders(mine).values()}, 20)
        # A taker buys the new sell: it fills, and the buy at 59750 comes back.
        amount = next(a for s, p, a in orders(mine).values() if p == 60000.0)
        t.create_order("BTC/USDT", "market", "buy", amount)
        assert wait_for(lambda: ("buy", 59750.0) in {(s, p) for s, p, _ in orders(mine).values()}, 20)
        assert len(orders(mine)) == 4
    finally:
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=30) == 0
    saved = json.loads(state.read_text())
    assert saved["state"]["fills"] == 2
    before = orders(mine)

    # A restart resumes from the state: the same orders, none placed twice.
    res = keyplane(env, "bot", "grid", *args, "--duration", "3")
    assert res.returncode == 0, res.stderr
    assert "resuming grid" in res.stderr
    assert orders(mine) == before

    # And `keyplane bot cancel` takes a left grid off the book.
    res = keyplane(env, "bot", "cancel", "--state", str(state))
    assert res.returncode == 0, res.stderr
    assert "canceled 4 open order(s)" in res.stdout and orders(mine) == {}


def test_stops_loudly_when_its_key_is_revoked(xs: ExchangeServer, book: Account, tmp_path: Path) -> None:
    carol = account(xs, ("read", "trade"), USDT="1000", BTC="0.01")
    env = clean_env(tmp_path, profile_env("carol", xs.url, carol))
    state = tmp_path / "grid.json"
    log = tmp_path / "bot.log"
    bot = start_bot(
        env, "--profile", "carol", *GRID, "--interval", "0.3", "--state", str(state), "--duration", "60", log=log
    )
    reader = new_key(xs, carol, ("read",))
    watch = cx(xs.url, reader)
    try:
        assert wait_for(lambda: len(orders(watch)) == 4, 30), log.read_text()
        assert "no IP allowlist" in log.read_text()  # warned at start-up
        xs.services.keys.revoke(carol.api_key)
        started = time.monotonic()
        code = bot.wait(timeout=30)
    finally:
        if bot.poll() is None:
            bot.kill()
    assert code == 3
    assert time.monotonic() - started < 15
    text = log.read_text()
    assert "STOPPED: the key no longer works (key_revoked)" in text
    assert carol.secret not in text and carol.api_key not in text
    assert len(orders(watch)) == 4  # orders left as they are
    saved = json.loads(state.read_text())["state"]
    assert sum(1 for lv in saved["levels"] if lv["status"] == "open") == 4


def test_dry_run_needs_no_key_and_fills_on_the_live_book(xs: ExchangeServer, book: Account, tmp_path: Path) -> None:
    env = clean_env(tmp_path, {})
    state = tmp_path / "dry.json"
    log = tmp_path / "dry.log"
    bot = start_bot(
        env,
        "--dry-run",
        "--base-url",
        xs.url,
        *GRID,
        "--interval",
        "0.3",
        "--state",
        str(state),
        "--duration",
        "40",
        "--on-stop",
        "leave",
        log=log,
    )
    try:
        assert wait_for(lambda: state.exists() and "paper_orders" in state.read_text(), 30), log.read_text()
        assert wait_for(lambda: len(json.loads(state.read_text())["paper_orders"]) == 4, 10)
        # The live book moves: an ask at 59700 crosses the paper buy at 59750.
        cx(xs.url, book).create_order("BTC/USDT", "limit", "sell", 0.001, 59700)
        assert wait_for(lambda: json.loads(state.read_text())["state"]["fills"] >= 1, 20), log.read_text()
    finally:
        bot.send_signal(signal.SIGTERM)
        assert bot.wait(timeout=30) == 0
    saved = json.loads(state.read_text())
    assert saved["state"]["dry_run"] is True
    assert any(
        o["side"] == "sell" and o["price"] == "60000" and o["status"] == "open" for o in saved["paper_orders"].values()
    )
