"""Replay across a restart in which the new process starts before the old one has stopped (a
rolling or blue/green restart on one host, one data dir, no Redis).

The old process's replay tokens reach its file only when it stops, so a second server on the
same data dir could accept again an order the first one accepted. Without Redis only one server
may run on a data dir: the second is refused in one line until the first has gone.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.services import build_services
from keyplane.settings import Settings
from kptest.backends import Backend
from kptest.clients import hmac_sign, now_ms
from kptest.server import start_process


@pytest.fixture
def node_env(tmp_path: Path, kp_backend: Backend, master_keys: str) -> dict[str, str]:
    env = {"KEYPLANE_DATA_DIR": str(tmp_path / "data"), "KEYPLANE_RECV_WINDOW_DEFAULT_MS": "60000"}
    if kp_backend.database_url:
        env["KEYPLANE_DATABASE_URL"] = kp_backend.database_url
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
        owner = svc.accounts.create_user(f"overlap-{secrets.token_hex(4)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, scopes=("read", "trade"), step_up=StepUp.operator())
        return k.info.api_key, k.secret or ""
    finally:
        svc.close()


def _order(key: str, secret: str) -> tuple[str, dict[str, str]]:
    body = urlencode(
        {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
         "price": "10000", "timestamp": now_ms()}
    )  # fmt: skip
    return f"{body}&signature={hmac_sign(secret, body)}", {
        "X-MBX-APIKEY": key,
        "Content-Type": "application/x-www-form-urlencoded",
    }


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_an_overlapping_restart_does_not_accept_an_order_twice(node_env, tmp_path, stop):
    """A replacement started while the old server runs is refused in one line, and once the old
    one has gone (cleanly or not), the replacement refuses the order the old one accepted."""
    key, secret = _key(node_env)
    old = start_process(node_env, tmp_path / "old.log")
    new = None
    try:
        body, headers = _order(key, secret)
        first = httpx.post(old.url + "/api/v3/order/test", content=body, headers=headers, timeout=10)
        assert first.status_code == 200, first.text
        with pytest.raises(RuntimeError) as refused:  # the replacement comes up first...
            start_process(node_env, tmp_path / "new.log")
        assert "another keyplane server (pid" in str(refused.value)
        assert "Traceback" not in str(refused.value)
        os.kill(old.proc.pid, stop)  # ...then the old process goes away, and the next start holds
        old.proc.wait(timeout=15)
        new = start_process(node_env, tmp_path / "new2.log")
        again = httpx.post(new.url + "/api/v3/order/test", content=body, headers=headers, timeout=10)
        assert again.status_code in (400, 401), (
            f"the order the old process accepted was accepted again by its replacement: {again.text}"
        )
    finally:
        old.stop()
        if new is not None:
            new.stop()
