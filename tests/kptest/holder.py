"""Helpers for the holder-side end-to-end tests: funded accounts with keys, profiles in the
environment, the simulator in a subprocess, and ``keyplane`` commands run as a user runs them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyplane.accounts.stepup import StepUp
from kptest.backends import Backend
from kptest.exchange import ExchangeServer


@dataclass
class Account:
    user: Any
    api_key: str
    secret: str


def account(xs: ExchangeServer, scopes: tuple[str, ...] = ("read",), **credit: str) -> Account:
    svc = xs.services
    user = svc.accounts.create_user(f"h{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    for asset, amount in credit.items():
        assert svc.exchange is not None
        svc.exchange.wallet.credit(user.id, asset, amount)
    issued = svc.keys.create(user.id, scopes=scopes, step_up=StepUp.operator())
    assert issued.secret is not None
    return Account(user, issued.info.api_key, issued.secret)


def new_key(xs: ExchangeServer, acct: Account, scopes: tuple[str, ...], **restrictions: Any) -> Account:
    svc = xs.services
    issued = svc.keys.create(
        acct.user.id, scopes=scopes, restrictions=svc.keys.build_restrictions(**restrictions), step_up=StepUp.operator()
    )
    assert issued.secret is not None
    return Account(acct.user, issued.info.api_key, issued.secret)


def profile_env(name: str, url: str, acct: Account) -> dict[str, str]:
    up = name.upper()
    return {
        f"KEYPLANE_PROFILE_{up}_API_KEY": acct.api_key,
        f"KEYPLANE_PROFILE_{up}_SECRET": acct.secret,
        f"KEYPLANE_PROFILE_{up}_BASE_URL": url,
    }


def server_env(settings: Any, backend: Backend, master_keys: str) -> dict[str, str]:
    """What a server-side command (``keyplane simulate``) needs to share the test server's data:
    its data dir and, on PostgreSQL, its database (each server's own, see kptest/backends.py)."""
    env = {"KEYPLANE_DATA_DIR": str(settings.data_dir)}
    if backend.postgres:
        env |= {"KEYPLANE_DATABASE_URL": settings.database_url, "KEYPLANE_MASTER_KEYS": master_keys}
    return env


def clean_env(holder_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a holder command: no stray profiles or passphrases from the caller."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEYPLANE_PROFILE_", "KEYPLANE_KEYSTORE", "KEYPLANE_HOLDER_DIR", "KEYPLANE_TAX_"))
    }
    return {**base, "KEYPLANE_HOLDER_DIR": str(holder_dir), "COLUMNS": "200", **extra}


def keyplane(env: Mapping[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyplane", *args], env=dict(env), capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def simulator(
    url: str, env: Mapping[str, str], duration: float = 30, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``keyplane simulate`` against ``url`` for at most ``duration`` seconds."""
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyplane",
            "simulate",
            "--url",
            url,
            "--duration",
            str(duration),
            "--interval",
            "0.2",
            "--seed",
            "7",
        ],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]
