"""Fixtures shared by the whole suite. See tests/kptest/ for the helpers behind them."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyplane.accounts.service import UserInfo
from keyplane.accounts.stepup import StepUp
from keyplane.keys.schemas import IssuedKey
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.backends import Backend, backend
from kptest.server import ThreadServer, start_in_thread


@pytest.fixture(scope="session")
def kp_backend() -> Iterator[Backend]:
    with backend() as b:
        yield b


@pytest.fixture(scope="session")
def master_keys() -> str:
    """One master key for the run: every server process on the shared PostgreSQL database uses it."""
    from keyplane.crypto.keyring import encode_master_key, new_master_key

    return encode_master_key(new_master_key())


@pytest.fixture(scope="session")
def make_settings(
    kp_backend: Backend, tmp_path_factory: pytest.TempPathFactory, master_keys: str
) -> Callable[..., Settings]:
    """Settings for this backend. Each call gets its own data dir (so its own SQLite database);
    on PostgreSQL every call shares this run's database and master key (KEYPLANE_MASTER_KEYS)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path_factory.mktemp("kpdata"),
            "master_keys": master_keys if kp_backend.database_url else None,
            "database_url": kp_backend.database_url,
            "redis_url": kp_backend.redis_url,
            "redis_prefix": kp_backend.redis_prefix,
            "key_cache_poll_s": 0.1,
            "last_used_flush_s": 0.2,
            # Every test shares 127.0.0.1: lockout and IP limits are set per test where they are tested.
            "lockout_failures": 1_000_000,
            "rate_limit_per_ip": "1000000/minute",
            "rate_limit_public_per_ip": "1000000/minute",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def own_services(make_settings: Callable[..., Settings], kp_backend: Backend) -> Iterator[Services]:
    """Services on a database of this test's own, for a test that acts on every key at once (the
    expiry sweep, a master-key rotation): on the shared database it would change other tests' keys."""
    if kp_backend.database_url is None:
        svc = build_services(make_settings())  # its own data dir: its own SQLite database
        yield svc
        svc.close()
        return
    from kptest.backends import postgres_database

    with postgres_database() as url:
        svc = build_services(make_settings(database_url=url))
        try:
            yield svc
        finally:
            svc.close()


@pytest.fixture(scope="session")
def server(settings: Settings, services: Services) -> Iterator[ThreadServer]:
    """One live server for the session, sharing ``services`` with the test process."""
    from keyplane.api.app import create_app

    srv = start_in_thread(create_app(settings, services))
    yield srv
    srv.stop()


def user_maker(services: Services) -> Callable[..., UserInfo]:
    def make(email: str | None = None, password: str = "correct horse battery staple") -> UserInfo:
        return services.accounts.create_user(email or f"u{secrets.token_hex(6)}@example.com", password)

    return make


def key_maker(services: Services) -> Callable[..., IssuedKey]:
    """Create a key on ``services``; ``ips``/``symbols``/... become restrictions, ``user``
    defaults to a new user."""
    make_user = user_maker(services)

    def make(
        *,
        user: UserInfo | None = None,
        scopes: tuple[str, ...] = ("read",),
        key_type: str = "hmac",
        public_key: str | None = None,
        label: str = "",
        **restrictions: Any,
    ) -> IssuedKey:
        owner = user or make_user()
        return services.keys.create(
            owner.id,
            scopes=scopes,
            restrictions=services.keys.build_restrictions(**restrictions),
            key_type=key_type,  # type: ignore[arg-type]
            public_key=public_key,
            label=label,
            step_up=StepUp.operator(),
        )

    return make


@pytest.fixture
def make_user(services: Services) -> Callable[..., UserInfo]:
    return user_maker(services)


@pytest.fixture
def make_key(services: Services) -> Callable[..., IssuedKey]:
    return key_maker(services)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path
