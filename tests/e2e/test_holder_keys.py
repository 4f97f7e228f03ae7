"""``keyplane keys``: add, list, doctor against a live server, change-passphrase, remove, and the
one-line errors for a wrong passphrase, a damaged file and an unknown profile."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyplane.cli import app
from keyplane.client.keystore import Keystore
from kptest.exchange import ExchangeServer, exchange_server
from kptest.holder import account, new_key

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    with exchange_server(make_settings()) as srv:
        yield srv


def run(env: dict[str, str], *args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), env=env, input=input)


def test_keystore_commands(xs: ExchangeServer, tmp_path: Path) -> None:
    ks = tmp_path / "keys.kps"
    env = {"KEYPLANE_KEYSTORE": str(ks), "KEYPLANE_KEYSTORE_PASSPHRASE": "first passphrase", "COLUMNS": "200"}
    reader = account(xs, ("read",))
    risky = new_key(xs, reader, ("read", "trade", "withdraw"), ips=["127.0.0.1/32"])
    soon = new_key(
        xs, reader, ("read", "trade"), ips=["127.0.0.1/32"], expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    )

    for name, acct in (("tracker", reader), ("risky", risky), ("soon", soon)):
        res = run(env, "keys", "add", name, "--base-url", xs.url, input=f"{acct.api_key}\n{acct.secret}\n")
        assert res.exit_code == 0, res.output
        assert acct.secret not in res.output and acct.api_key not in res.output
    raw = ks.read_text()
    assert reader.secret not in raw and reader.api_key not in raw

    res = run(env, "keys", "list")
    assert res.exit_code == 0
    assert "tracker" in res.output and reader.api_key[:12] in res.output and reader.api_key not in res.output

    res = run(env, "keys", "doctor")
    assert res.exit_code == 0, res.output
    assert "risky: withdraw is enabled" in res.output
    assert "tracker: no IP allowlist" in res.output
    assert "soon: the key expires on" in res.output
    assert "read-only: fit for portfolio and tax" in res.output
    assert "fit for a bot" in res.output

    res = run({**env, "KEYPLANE_NEW_KEYSTORE_PASSPHRASE": "second passphrase"}, "keys", "change-passphrase")
    assert res.exit_code == 0 and "re-encrypted 3 profile(s)" in res.output
    assert sorted(Keystore.open(ks, "second passphrase").profiles) == ["risky", "soon", "tracker"]

    res = run(env, "keys", "list")  # still the old passphrase in the environment
    assert res.exit_code == 2
    assert res.output.strip() == "error: wrong passphrase for the keystore (or its header was altered)"

    env["KEYPLANE_KEYSTORE_PASSPHRASE"] = "second passphrase"
    res = run(env, "keys", "doctor", "ghost")
    assert res.exit_code == 2 and "unknown profile 'ghost' (profiles: risky, soon, tracker)" in res.output

    res = run(env, "keys", "remove", "risky")
    assert res.exit_code == 0
    assert sorted(Keystore.open(ks, "second passphrase").profiles) == ["soon", "tracker"]

    good = ks.read_bytes()
    ks.write_bytes(good[: len(good) // 2])  # truncated, as by a full disk
    truncated = ks.read_bytes()
    for args in (("keys", "list"), ("keys", "add", "x", "--base-url", xs.url)):
        res = run(env, *args, input="k\ns\n")
        assert res.exit_code == 2 and "truncated" in res.output and "Traceback" not in res.output
        assert ks.read_bytes() == truncated  # the damaged file was not overwritten


def test_doctor_reports_an_unreachable_exchange(tmp_path: Path) -> None:
    env = {
        "KEYPLANE_KEYSTORE": str(tmp_path / "none.kps"),
        "KEYPLANE_PROFILE_GONE_API_KEY": "kp_live_0000000000000000000000",
        "KEYPLANE_PROFILE_GONE_SECRET": "kps_0000",
        "KEYPLANE_PROFILE_GONE_BASE_URL": "http://127.0.0.1:9",
    }
    res = run(env, "keys", "doctor")
    assert res.exit_code == 1 and "gone:" in res.output and "unreachable" in res.output
