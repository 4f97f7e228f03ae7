"""No replay succeeds across a restart of a node that has no Redis (SQLite, or PostgreSQL alone).

``keyplane serve`` runs as a user runs it, in its own process; it is stopped cleanly (SIGTERM) and
killed (SIGKILL), and the same signed order is sent again after each restart.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.services import build_services
from keyplane.settings import Settings
from kptest.clients import hmac_sign, now_ms
from kptest.server import ProcessServer, start_process

pytestmark = pytest.mark.slow


@pytest.fixture
def node_env(tmp_path: Path, make_settings: Callable[..., Settings], master_keys: str) -> dict[str, str]:
    env = {"KEYPLANE_DATA_DIR": str(tmp_path / "data"), "KEYPLANE_RECV_WINDOW_DEFAULT_MS": "60000"}
    url = make_settings().database_url  # PostgreSQL: a database of this test's own
    if url:  # PostgreSQL without Redis: one node, in-process replay guard
        env["KEYPLANE_DATABASE_URL"] = url
        env["KEYPLANE_MASTER_KEYS"] = master_keys
    env["KEYPLANE_REDIS_URL"] = ""
    return env


def _key(env: dict[str, str]) -> tuple[str, str]:
    settings = Settings(
        data_dir=Path(env["KEYPLANE_DATA_DIR"]),
        database_url=env.get("KEYPLANE_DATABASE_URL") or None,
        master_keys=env.get("KEYPLANE_MASTER_KEYS") or None,
    )
    svc = build_services(settings)
    try:
        owner = svc.accounts.create_user(f"restart-{secrets.token_hex(4)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, scopes=("read", "trade"), step_up=StepUp.operator())
        return k.info.api_key, k.secret
    finally:
        svc.close()


def _signed_order(key: str, secret: str) -> tuple[str, dict[str, str]]:
    body = urlencode(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "10000", "timestamp": now_ms()}
    )  # fmt: skip
    return f"{body}&signature={hmac_sign(secret, body)}", {
        "X-MBX-APIKEY": key,
        "Content-Type": "application/x-www-form-urlencoded",
    }


def _send(srv: ProcessServer, body: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(srv.url + "/api/v3/order/test", content=body, headers=headers, timeout=10)


def _stop(srv: ProcessServer, sig: signal.Signals) -> None:
    os.kill(srv.proc.pid, sig)
    srv.proc.wait(timeout=15)


def test_a_signed_order_is_not_accepted_again_after_a_restart(node_env, tmp_path):
    key, secret = _key(node_env)
    srv = start_process(node_env, tmp_path / "1.log")
    try:
        body, headers = _signed_order(key, secret)
        assert _send(srv, body, headers).status_code == 200
        _stop(srv, signal.SIGTERM)  # a clean stop hands the tokens to the next start

        srv = start_process(node_env, tmp_path / "2.log")
        again = _send(srv, body, headers)
        assert again.status_code == 401, again.text
        assert again.json()["reason"] == "replayed"

        body, headers = _signed_order(key, secret)
        assert _send(srv, body, headers).status_code == 200
        _stop(srv, signal.SIGKILL)  # no chance to write anything

        srv = start_process(node_env, tmp_path / "3.log")
        again = _send(srv, body, headers)
        assert again.status_code == 400, again.text
        assert again.json()["code"] == -1021  # ccxt: InvalidNonce; the client signs anew
        assert "restarted" in again.json()["msg"]

        # A request signed after the restart is served (within about a second of the start).
        deadline = time.monotonic() + 5
        while True:
            fresh_body, fresh_headers = _signed_order(key, secret)
            fresh = _send(srv, fresh_body, fresh_headers)
            if fresh.status_code == 200 or time.monotonic() > deadline:
                break
            assert fresh.json()["code"] == -1021, fresh.text
            time.sleep(0.05)
        assert fresh.status_code == 200, fresh.text
        # The replayed request stays refused, and reads were never affected.
        assert _send(srv, body, headers).status_code == 400
    finally:
        srv.stop()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_overlapping_restart_does_not_accept_an_order_twice(node_env, tmp_path, stop):
    """A replacement started while the old server runs (one data dir, no Redis) is refused in one
    line; once the old one has gone, cleanly or not, the replacement refuses the order it accepted."""
    key, secret = _key(node_env)
    old = start_process(node_env, tmp_path / "old.log")
    new = None
    try:
        body, headers = _signed_order(key, secret)
        first = _send(old, body, headers)
        assert first.status_code == 200, first.text
        with pytest.raises(RuntimeError) as refused:  # the replacement comes up first...
            start_process(node_env, tmp_path / "new.log")
        assert "another keyplane server (pid" in str(refused.value)
        assert "Traceback" not in str(refused.value)
        _stop(old, stop)  # ...then the old process goes away, and the next start holds the lock
        new = start_process(node_env, tmp_path / "new2.log")
        again = _send(new, body, headers)
        assert again.status_code in (400, 401), (
            f"the order the old process accepted was accepted again by its replacement: {again.text}"
        )
    finally:
        old.stop()
        if new is not None:
            new.stop()
