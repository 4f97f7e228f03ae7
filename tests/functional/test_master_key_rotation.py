"""A master-key rotation while servers keep working: ``keyplane serve`` processes (two on
PostgreSQL + Redis, sharing a keyfile; one on SQLite) sign up users, enrol TOTP and create keys
without pause while the operator runs ``add-master-key``, ``rotate-master-key`` and
``drop-master-key``. No request fails, every key verifies on every node, and TOTP codes of users
enrolled before the rotation still verify after it (their secrets were re-encrypted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from keyplane.crypto.keyring import load_or_create_keyfile, parse_keyring
from kptest.backends import Backend, postgres_database
from kptest.clients import signed_get
from kptest.console import ConsoleClient
from kptest.native import unique_prefix
from kptest.server import ProcessServer, start_process

LIMITS = {
    "KEYPLANE_LOCKOUT_FAILURES": "100000",
    "KEYPLANE_RATE_LIMIT_PER_IP": "1000000/minute",
    "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "1000000/minute",
    "KEYPLANE_LOGIN_LIMIT_PER_IP": "100000/minute",
    "KEYPLANE_TOTP_LIMIT_PER_IP": "100000/minute",
    "KEYPLANE_KEY_CACHE_POLL_S": "0.1",
}


def admin(env: dict[str, str], *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "keyplane", "admin", *args, "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def nodes(tmp_path: Path, kp_backend: Backend) -> Iterator[tuple[dict[str, str], Path, list[ProcessServer]]]:
    with ExitStack() as stack:
        if kp_backend.postgres:
            keyfile = tmp_path / "shared" / "master.keys"
            load_or_create_keyfile(keyfile)
            env = {
                **LIMITS,
                "KEYPLANE_DATABASE_URL": stack.enter_context(postgres_database()),
                "KEYPLANE_REDIS_URL": kp_backend.redis_url or "",
                "KEYPLANE_REDIS_PREFIX": unique_prefix(),
                "KEYPLANE_MASTER_KEYS_FILE": str(keyfile),
            }
            names = ["a", "b"]
        else:
            keyfile = tmp_path / "a" / "master.keys"  # the generated keyfile of the embedded default
            env = dict(LIMITS)
            names = ["a"]
        servers = []
        for name in names:
            node = start_process({**env, "KEYPLANE_DATA_DIR": str(tmp_path / name)}, tmp_path / f"{name}.log")
            stack.callback(node.stop)
            servers.append(node)
        yield {**env, "KEYPLANE_DATA_DIR": str(tmp_path / "a")}, keyfile, servers


class Traffic:
    """Sign up, enrol TOTP and create a key, over and over, on each node in turn; check each key on
    every node. Records anything that is not the expected answer."""

    def __init__(self, servers: list[ProcessServer]) -> None:
        self.servers = servers
        self.rounds = 0
        self.problems: list[str] = []
        self.keys: list[tuple[str, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            node = self.servers[self.rounds % len(self.servers)]
            console = ConsoleClient(node.url)
            try:
                if (r := console.signup()).status_code != 201:
                    self.problems.append(f"signup {r.status_code} {r.text[:200]}")
                    continue
                console.enrol()  # asserts 200 for the enrolment and the first code
                r = console.create_key(scopes=["read"])
                if r.status_code != 201:
                    self.problems.append(f"create_key {r.status_code} {r.text[:200]}")
                    continue
                key, secret = r.json()["api_key"], r.json()["secret"]
                self.keys.append((key, secret))
                for other in self.servers:
                    got = signed_get(other.url, "/sapi/v1/account/apiRestrictions", key, secret)
                    if got.status_code != 200:
                        self.problems.append(f"verify on {other.url}: {got.status_code} {got.text[:200]}")
            except Exception as e:  # an assertion in enrol(), or a connection error
                self.problems.append(f"{type(e).__name__}: {e}")
            finally:
                console.close()
                self.rounds += 1

    def wait_rounds(self, more: int, limit_s: float = 60.0) -> None:
        target = self.rounds + more
        deadline = time.monotonic() + limit_s
        while self.rounds < target:
            assert time.monotonic() < deadline, f"traffic stalled at {self.rounds} rounds: {self.problems}"
            assert self.thread.is_alive()
            time.sleep(0.02)


def test_rotation_while_servers_create_keys_and_enrol_totp(nodes):
    env, keyfile, servers = nodes
    early = [ConsoleClient(s.url).ready() for s in servers]  # enrolled under the old key
    traffic = Traffic(servers)
    traffic.thread.start()
    try:
        traffic.wait_rounds(2)
        old = admin(env, "master-keys")["active"]
        new = admin(env, "add-master-key")["added"]
        traffic.wait_rounds(2)
        rotated = admin(env, "rotate-master-key")
        assert (rotated["previous"], rotated["active"], rotated["remaining"]) == (old, new, 0)
        traffic.wait_rounds(2)
        admin(env, "drop-master-key", str(old))
        assert parse_keyring(keyfile.read_text()).ids == [new]
        traffic.wait_rounds(2)
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=60)
    assert traffic.problems == []
    status = admin(env, "master-keys")
    assert status["active"] == new and set(status["ciphertexts"]) == {new}  # type: ignore[arg-type]
    # Users enrolled before the rotation pass a TOTP check on every node (re-encrypted secrets).
    for i, console in enumerate(early):
        console.http.base_url = servers[(i + 1) % len(servers)].url  # type: ignore[assignment]
        r = console.create_key(scopes=["read"])
        assert r.status_code == 201, r.text
        traffic.keys.append((r.json()["api_key"], r.json()["secret"]))
        console.close()
    for key, secret in traffic.keys:
        for node in servers:
            assert signed_get(node.url, "/sapi/v1/account/apiRestrictions", key, secret).status_code == 200
    for node in servers:
        log = node.log.read_text(errors="replace")
        assert "Traceback" not in log and " 500 " not in log
