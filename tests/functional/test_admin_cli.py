"""The operator's CLI, run as a user runs it (``python -m keyplane ...`` subprocesses), against a
``keyplane serve`` process that shares its database."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from keyplane.settings import Settings
from kptest.clients import ed25519_keypair, ed25519_sign, now_ms, signed_get
from kptest.server import start_process


@pytest.fixture
def cli_env(tmp_path: Path, make_settings: Callable[..., Settings], master_keys: str) -> dict[str, str]:
    env = {
        "KEYPLANE_DATA_DIR": str(tmp_path / "data"),
        "KEYPLANE_KEY_CACHE_POLL_S": "0.1",
        # Polling for a change refuses a few requests from 127.0.0.1 first: never a lockout (as in conftest).
        "KEYPLANE_LOCKOUT_FAILURES": "1000000",
    }
    url = make_settings().database_url  # PostgreSQL: a database of this test's own
    if url:
        env["KEYPLANE_DATABASE_URL"] = url
        env["KEYPLANE_MASTER_KEYS"] = master_keys
    return env


def run(
    env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "keyplane", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"keyplane {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def new_email() -> str:
    return f"cli{secrets.token_hex(5)}@example.com"


@pytest.fixture
def served(cli_env: dict[str, str], tmp_path: Path):
    srv = start_process(cli_env, tmp_path / "server.log")
    yield srv
    srv.stop()


def test_operator_flow(cli_env, served):
    email = new_email()
    user = json.loads(
        run(
            cli_env, "admin", "create-user", email, "--password-stdin", "--json", stdin="a long enough password\n"
        ).stdout
    )
    assert user["email"] == email
    created = json.loads(
        run(
            cli_env,
            "admin",
            "create-key",
            email,
            "--scope",
            "read",
            "--scope",
            "trade",
            "--ip",
            "127.0.0.1",
            "--symbol",
            "BTCUSDT",
            "--max-notional",
            "1000",
            "--expires-in",
            "30d",
            "--label",
            "bot",
            "--json",
        ).stdout
    )
    api_key, secret = created["api_key"], created["secret"]
    assert api_key.startswith("kp_live_") and secret.startswith("kps_")
    assert created["scopes"] == ["read", "trade"] and created["symbols"] == ["BTCUSDT"]
    assert signed_get(served.url, "/api/v3/account", api_key, secret).status_code == 200

    listed = run(cli_env, "admin", "list-keys", email, "--json").stdout
    assert secret not in listed
    assert json.loads(listed)[0]["api_key"] == api_key

    rotated = json.loads(run(cli_env, "admin", "rotate-key", api_key, "--grace", "24h", "--json").stdout)
    assert rotated["secret"] != secret and rotated["previous_secret_valid_until"]
    # Once the server's poller has picked up the change, the new secret works, and the old one still does.
    assert _accepted_within(served.url, api_key, rotated["secret"], 1.0)
    assert signed_get(served.url, "/api/v3/account", api_key, secret).status_code == 200
    assert signed_get(served.url, "/api/v3/account", api_key, rotated["secret"]).status_code == 200

    run(cli_env, "admin", "disable-key", api_key)
    assert _rejected_within(served.url, api_key, rotated["secret"], 1.0) == "key_disabled"
    run(cli_env, "admin", "enable-key", api_key)
    assert _accepted_within(served.url, api_key, rotated["secret"], 1.0)

    run(cli_env, "admin", "revoke-key", api_key)
    assert _rejected_within(served.url, api_key, rotated["secret"], 1.0) == "key_revoked"


def _rejected_within(url: str, key: str, secret: str, seconds: float) -> str | None:
    """Poll until the key is rejected; the reason, or None if it never was within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        resp = signed_get(url, "/api/v3/account", key, secret)
        if resp.status_code != 200:
            return str(resp.json()["reason"])
        time.sleep(0.05)
    return None


def _accepted_within(url: str, key: str, secret: str, seconds: float) -> bool:
    """Poll until the key is accepted with ``secret``; False if it never was within ``seconds``."""
    deadline = time.monotonic() + seconds
    while signed_get(url, "/api/v3/account", key, secret).status_code != 200:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_revoke_all(cli_env, served):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    keys = [json.loads(run(cli_env, "admin", "create-key", email, "--json").stdout) for _ in range(2)]
    out = json.loads(run(cli_env, "admin", "revoke-all", email, "--json").stdout)
    assert out["count"] == 2
    for k in keys:
        assert _rejected_within(served.url, k["api_key"], k["secret"], 1.0) == "key_revoked"


def test_ed25519_key_from_a_pem_file(cli_env, served, tmp_path):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    priv, pub = ed25519_keypair()
    (tmp_path / "pub.pem").write_text(pub)
    created = json.loads(
        run(
            cli_env,
            "admin",
            "create-key",
            email,
            "--type",
            "ed25519",
            "--public-key",
            str(tmp_path / "pub.pem"),
            "--json",
        ).stdout
    )
    assert created["secret"] is None and created["type"] == "ed25519"
    q = f"timestamp={now_ms()}"
    resp = httpx.get(
        f"{served.url}/api/v3/account?{q}&signature={ed25519_sign(priv, q)}",
        headers={"X-MBX-APIKEY": created["api_key"]},
    )
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create-key", "{email}", "--scope", "admin"], "unknown scope 'admin'"),
        (["create-key", "{email}", "--scope", "withdraw"], "needs an IP allowlist"),
        (["create-key", "{email}", "--ip", "300.1.1.1"], "'300.1.1.1' is not an IPv4/IPv6 address or CIDR"),
        (["create-key", "{email}", "--expires-in", "soon"], "not a duration"),
        (["create-key", "{email}", "--max-notional", "-5"], "positive number"),
        (["create-key", "{email}", "--type", "rsa"], "unknown key type"),
        (["create-key", "nobody@example.com"], "no user"),
        (["revoke-key", "kp_live_0000000000000000000000000000"], "no key"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli_env, args, message):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    proc = run(cli_env, "admin", *[a.format(email=email) for a in args], check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_too_many_ips(cli_env):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    ips = [arg for i in range(31) for arg in ("--ip", f"10.0.0.{i}")]
    proc = run(cli_env, "admin", "create-key", email, *ips, check=False)
    assert proc.returncode == 2 and "at most 30" in proc.stderr


def test_duplicate_and_bad_users(cli_env):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    dup = run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n", check=False)
    assert dup.returncode == 2 and "already exists" in dup.stderr
    short = run(cli_env, "admin", "create-user", new_email(), "--password-stdin", stdin="short\n", check=False)
    assert short.returncode == 2 and "at least" in short.stderr


def test_rotate_master_key_reencrypts_every_secret(cli_env, tmp_path):
    # Rotation re-encrypts every secret in the database: cli_env's is this test's own on either backend.
    _rotate_master_key(cli_env, tmp_path, postgres="KEYPLANE_DATABASE_URL" in cli_env)


def _rotate_master_key(cli_env, tmp_path, *, postgres: bool):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    created = json.loads(run(cli_env, "admin", "create-key", email, "--json").stdout)
    old = json.loads(run(cli_env, "admin", "master-keys", "--json").stdout)["active"]
    if postgres:
        new = run(cli_env, "admin", "generate-master-key").stdout.strip()
        refused = run(cli_env, "admin", "add-master-key", check=False)
        assert refused.returncode == 2 and "KEYPLANE_MASTER_KEYS" in refused.stderr
        cli_env = {**cli_env, "KEYPLANE_MASTER_KEYS": cli_env["KEYPLANE_MASTER_KEYS"] + "," + new}
    else:
        keyfile = Path(cli_env["KEYPLANE_DATA_DIR"]) / "master.keys"
        assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
        added = json.loads(run(cli_env, "admin", "add-master-key", "--json").stdout)["added"]
        assert len(keyfile.read_text().split()) == 2
        assert json.loads(run(cli_env, "admin", "master-keys", "--json").stdout)["active"] == old  # not yet
    refused = run(cli_env, "admin", "drop-master-key", old, check=False)
    assert refused.returncode == 2 and "active" in refused.stderr
    out = json.loads(run(cli_env, "admin", "rotate-master-key", "--json").stdout)
    assert out["previous"] == old and out["reencrypted"] >= 1 and out["remaining"] == 0
    status = json.loads(run(cli_env, "admin", "master-keys", "--json").stdout)
    assert status["active"] == out["active"] and old not in status["ciphertexts"]
    run(cli_env, "admin", "drop-master-key", old)
    if postgres:
        cli_env = {**cli_env, "KEYPLANE_MASTER_KEYS": new}  # the old key is retired
    else:
        assert keyfile.read_text().split() != [] and len(keyfile.read_text().split()) == 1
        assert out["active"] == added
        assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    srv = start_process(cli_env, tmp_path / "after-rotation.log")
    try:
        assert signed_get(srv.url, "/api/v3/account", created["api_key"], created["secret"]).status_code == 200
    finally:
        srv.stop()


def test_no_secret_reaches_the_server_log(cli_env, served):
    email = new_email()
    run(cli_env, "admin", "create-user", email, "--password-stdin", stdin="a long enough password\n")
    created = json.loads(run(cli_env, "admin", "create-key", email, "--json").stdout)
    for _ in range(3):
        signed_get(served.url, "/api/v3/account", created["api_key"], created["secret"])
        signed_get(served.url, "/api/v3/account", created["api_key"], "kps_wrong")
    served.stop()
    log = served.log.read_text(errors="replace")
    assert created["secret"] not in log
