"""``keyplane portfolio`` across two accounts on a live keyplane server whose books the simulator
filled: values to the unit, history, charts, the local web page, and one-line errors."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from keyplane.apps.portfolio.tracker import SnapshotStore
from keyplane.client import ccxt_exchange
from kptest.exchange import ExchangeServer, exchange_server
from kptest.holder import account, clean_env, keyplane, profile_env, server_env, simulator
from kptest.server import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def xs(make_settings, kp_backend, master_keys, tmp_path_factory) -> Iterator[ExchangeServer]:
    settings = make_settings()
    with exchange_server(settings) as srv:
        log = tmp_path_factory.mktemp("sim") / "simulator.log"
        with simulator(srv.url, server_env(settings, kp_backend, master_keys), duration=4, log=log) as sim:
            sim.wait(timeout=90)
        assert sim.returncode == 0, log.read_text()[-2000:]
        yield srv


def last_price(url: str, symbol: str) -> Decimal:
    ticker = ccxt_exchange(url).fetch_ticker(symbol)
    return Decimal(ticker["info"]["lastPrice"])


def test_portfolio_across_two_accounts(xs: ExchangeServer, tmp_path: Path) -> None:
    alice = account(xs, USDT="1000", BTC="0.5")
    bob = account(xs, ETH="2", USDT="50")
    env = clean_env(tmp_path, {**profile_env("alice", xs.url, alice), **profile_env("bob", xs.url, bob)})
    btc, eth = last_price(xs.url, "BTC/USDT"), last_price(xs.url, "ETH/USDT")
    assert btc > 0 and eth > 0, "the simulator should have traded"

    res = keyplane(env, "portfolio", "--quote", "USDT")
    assert res.returncode == 0, res.stderr
    expected = Decimal(1000) + Decimal("0.5") * btc + 2 * eth + 50
    # The printed total is rounded to cents; compare it to the exact sum within that rounding.
    printed = re.search(r"Total: ([0-9.]+) USDT", res.stdout)
    assert printed is not None, res.stdout
    assert abs(Decimal(printed.group(1)) - expected) <= Decimal("0.01")
    assert "alice (keyplane)" in res.stdout and "bob (keyplane)" in res.stdout
    for secret in (alice.secret, bob.secret, alice.api_key, bob.api_key):
        assert secret not in res.stdout + res.stderr

    store = SnapshotStore(tmp_path / "portfolio.sqlite")
    snap = store.latest("USDT")
    assert snap is not None and snap.total == expected
    per_asset = {a: amount for a, (amount, _v) in snap.by_asset().items()}
    assert per_asset == {"USDT": Decimal(1050), "BTC": Decimal("0.5"), "ETH": Decimal(2)}
    assert sum(snap.allocation().values()) == pytest.approx(Decimal(100), abs=Decimal("0.05"))

    assert keyplane(env, "portfolio").returncode == 0
    assert len(store.history("USDT")) == 2  # every run adds a snapshot
    store.close()

    for name in ("chart.png", "chart.svg"):
        res = keyplane(env, "portfolio", "chart", "--out", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "chart.svg").read_bytes()[:500]
    res = keyplane(env, "portfolio", "chart", "--out", str(tmp_path / "chart.gif"))
    assert res.returncode == 2 and ".png or .svg" in res.stderr


def test_portfolio_web_page(xs: ExchangeServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    alice = account(xs, USDT="777")
    env = clean_env(tmp_path, profile_env("alice", xs.url, alice))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyplane", "portfolio", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        assert "No snapshot yet" in httpx.get(base + "/").text
        evil = httpx.post(base + "/refresh", headers={"Origin": "http://evil.example"}, timeout=30)
        assert evil.status_code == 403
        r = httpx.post(base + "/refresh", headers={"Origin": base}, follow_redirects=False, timeout=30)
        assert r.status_code == 303
        page = httpx.get(base + "/").text
        assert "777" in page and "USDT" in page
        assert alice.secret not in page and alice.api_key not in page
        svg = httpx.get(base + "/chart.svg")
        assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content[:500]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_one_line_errors(xs: ExchangeServer, tmp_path: Path) -> None:
    alice = account(xs, USDT="1")
    env = clean_env(tmp_path, profile_env("alice", xs.url, alice))
    res = keyplane(env, "portfolio", "--profile", "nobody")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["error: unknown profile 'nobody' (profiles: alice)"]

    down = clean_env(tmp_path, profile_env("gone", "http://127.0.0.1:9", alice))
    res = keyplane(down, "portfolio")
    assert res.returncode == 1 and "error: gone: exchange unreachable" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

    trade_only = account(xs, scopes=("trade",))
    res = keyplane(clean_env(tmp_path, profile_env("t", xs.url, trade_only)), "portfolio")
    assert res.returncode == 1 and "needs the 'read' scope" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
