"""Which database (and Redis) the suite runs against.

``KEYPLANE_TEST_BACKEND=sqlite`` (default) or ``postgres``. With ``postgres`` the suite creates a
fresh database for this run (dropped at the end) and a unique Redis key prefix, so concurrent runs
never share state. Outside CI a missing service skips; with ``CI=true`` it fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

PG_ADMIN = os.environ.get("KEYPLANE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEYPLANE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def backend_name() -> str:
    return os.environ.get("KEYPLANE_TEST_BACKEND", "sqlite")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what} is not reachable, and CI=true makes that a failure, not a skip")
    pytest.skip(f"{what} is not reachable")


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str | None  # None: SQLite in the data dir
    redis_url: str | None
    redis_prefix: str


def _pg_admin_conn():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(PG_ADMIN.replace("postgresql+psycopg", "postgresql"), autocommit=True, connect_timeout=3)


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except Exception:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for the duration of the block."""
    try:
        admin = _pg_admin_conn()
    except Exception:
        unavailable("PostgreSQL at " + PG_ADMIN)
        raise
    name = f"kp_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin_conn() as admin2:
            admin2.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def backend() -> Iterator[Backend]:
    name = backend_name()
    prefix = f"kptest:{secrets.token_hex(4)}:"
    if name == "sqlite":
        yield Backend("sqlite", None, None, prefix)
        return
    if name != "postgres":
        raise pytest.UsageError(f"KEYPLANE_TEST_BACKEND must be sqlite or postgres, not {name!r}")
    if not redis_available():
        unavailable("Redis at " + REDIS_URL)
    with postgres_database() as url:
        try:
            yield Backend("postgres", url, REDIS_URL, prefix)
        finally:
            _flush_redis_prefix(prefix)


def _flush_redis_prefix(prefix: str) -> None:
    try:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=prefix + "*", count=1000):
            r.delete(key)
    except Exception:
        pass
