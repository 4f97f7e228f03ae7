"""The holder commands with one failing profile among good ones, and with a quote currency that is
not traded: each failure is one line with the server's message, the others go on, the exit code
says so, and nothing misleading is stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import ccxt
import pytest
from test_tax_sync import NOW, Exchange
from typer.testing import CliRunner

from keyplane.apps.portfolio import cli as portfolio_cli
from keyplane.apps.tax import cli as tax_cli
from keyplane.client.profile import Profile

REVOKED = 'binance {"code":-2015,"msg":"This API key has been revoked.","reason":"key_revoked"}'


class Wallet(Exchange):
    def fetch_balance(self) -> dict[str, Any]:
        return {"info": {"balances": [{"asset": "BTC", "free": "0.5", "locked": "0"}]}}

    def fetch_ticker(self, symbol: str) -> dict[str, Any]:
        return {"last": 60000.0, "info": {"lastPrice": "60000"}}


class Revoked:
    def load_markets(self) -> Any:
        raise ccxt.AuthenticationError(REVOKED)


def factory(profile: Profile, **_: Any) -> Any:
    return Revoked() if profile.name == "bad" else Wallet()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k in list(__import__("os").environ):
        if k.startswith(("KEYPLANE_PROFILE_", "KEYPLANE_KEYSTORE")):
            monkeypatch.delenv(k)
    monkeypatch.setenv("KEYPLANE_HOLDER_DIR", str(tmp_path))
    for name in ("bad", "good"):
        monkeypatch.setenv(f"KEYPLANE_PROFILE_{name.upper()}_API_KEY", "kp_live_x")
        monkeypatch.setenv(f"KEYPLANE_PROFILE_{name.upper()}_SECRET", "s")
    monkeypatch.setattr(portfolio_cli, "ccxt_exchange", factory)
    monkeypatch.setattr(tax_cli, "ccxt_exchange", factory)
    monkeypatch.setattr("keyplane.apps.tax.sync.time.time", lambda: NOW / 1000)
    return tmp_path


def snapshots(holder: Path) -> int:
    path = holder / "portfolio.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM snapshots").fetchone()[0])


def test_portfolio_goes_on_after_a_failing_profile(env: Path) -> None:
    res = CliRunner().invoke(portfolio_cli.app, [])
    assert res.exit_code == 1, res.output
    assert "Total: 30000.00 USDT" in res.stdout and "good (keyplane)" in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: bad: key_revoked: This API key has been revoked."]
    assert snapshots(env) == 0  # an incomplete total is not history
    res = CliRunner().invoke(portfolio_cli.app, ["--profile", "good"])
    assert res.exit_code == 0 and snapshots(env) == 1


def test_portfolio_refuses_a_quote_that_is_not_traded(env: Path) -> None:
    res = CliRunner().invoke(portfolio_cli.app, ["--profile", "good", "--quote", "EUR"])
    assert res.exit_code == 2
    assert res.stderr.startswith("error: EUR is not traded on keyplane (profile good)")
    assert "Total" not in res.stdout and snapshots(env) == 0


def test_tax_sync_goes_on_after_a_failing_profile(env: Path) -> None:
    ledger = env / "ledger.sqlite"
    res = CliRunner().invoke(tax_cli.app, ["sync", "--ledger", str(ledger)])
    assert res.exit_code == 1, res.output
    assert "error: bad: key_revoked: This API key has been revoked." in res.stderr
    assert "good: 3 new trade(s), 1 deposit(s), 0 withdrawal(s) (5 requests)" in res.stdout
    assert "ledger: 3 trades, 1 deposits, 0 withdrawals" in res.stdout


def test_keys_add_refuses_a_key_whose_checksum_fails(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from keyplane.apps import keys_cli
    from keyplane.keys import format as server_format

    monkeypatch.setenv("KEYPLANE_KEYSTORE_PASSPHRASE", "a long passphrase")
    key, secret = server_format.new_api_key(), server_format.new_secret()
    typo = key[:12] + ("x" if key[12] != "x" else "y") + key[13:]
    res = CliRunner().invoke(keys_cli.app, ["add", "main"], input=f"{typo}\n{secret}\n")
    assert res.exit_code == 2
    assert "error: the API key's checksum does not match" in res.stderr and "nothing was stored" in res.stderr
    res = CliRunner().invoke(
        keys_cli.app, ["add", "main"], input=f"{key}\n{secret[:-1]}{'x' if secret[-1] != 'x' else 'y'}\n"
    )
    assert res.exit_code == 2 and "the secret's checksum does not match" in res.stderr
    assert not (env / "keystore.kps").exists()
    res = CliRunner().invoke(keys_cli.app, ["add", "main"], input=f"{key}\n{secret}\n")
    assert res.exit_code == 0, res.output
    assert (env / "keystore.kps").exists()
