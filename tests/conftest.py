"""Fixtures shared by the whole suite. See tests/kptest/ for the helpers behind them.

Isolation: on PostgreSQL every ``make_settings()`` call gets a database of its own (a clone of a
template migrated once per run) and a Redis prefix of its own, dropped when the fixture or test
that asked for it ends; ``settings``, ``services`` and ``server`` are per test there, so every test
starts from the freshly migrated state. See kptest/backends.py.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from keyplane.accounts.service import UserInfo
from keyplane.accounts.stepup import StepUp
from keyplane.keys.schemas import IssuedKey
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.backends import Backend, backend, db_scope, owned_by
from kptest.server import ThreadServer, start_in_thread


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Generator[None]:
    """A database handed out while a fixture is set up is that fixture's: dropped at its teardown."""
    with owned_by(request):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    """A database handed out in a test's body is the test's: dropped when the test ends."""
    with owned_by(item):
        return (yield)


@pytest.fixture(scope="session")
def kp_backend() -> Iterator[Backend]:
    with backend() as b:
        yield b


@pytest.fixture(scope="session")
def master_keys() -> str:
    """One master key for the run: every server process on PostgreSQL uses it."""
    from keyplane.crypto.keyring import encode_master_key, new_master_key

    return encode_master_key(new_master_key())


@pytest.fixture(scope="session")
def make_settings(
    kp_backend: Backend, tmp_path_factory: pytest.TempPathFactory, master_keys: str
) -> Callable[..., Settings]:
    """Settings for this backend. Each call gets its own data dir (so, on SQLite, its own database)
    and its own Redis prefix; on PostgreSQL each call also gets a database of its own, cloned from
    the run's migrated template, unless ``database_url`` is given, and the run's master key
    (KEYPLANE_MASTER_KEYS). That database is dropped when the fixture being set up, or else the
    test, that made the call ends."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path_factory.mktemp("kpdata"),
            "master_keys": master_keys if kp_backend.postgres else None,
            "redis_url": kp_backend.redis_url,
            "key_cache_poll_s": 0.1,
            "last_used_flush_s": 0.2,
            # Every test shares 127.0.0.1: lockout and IP limits are set per test where they are tested.
            "lockout_failures": 1_000_000,
            "rate_limit_per_ip": "1000000/minute",
            "rate_limit_public_per_ip": "1000000/minute",
        }
        if "redis_prefix" not in overrides:
            values["redis_prefix"] = kp_backend.new_redis_prefix()
        if "database_url" not in overrides:
            values["database_url"] = kp_backend.new_database() if kp_backend.postgres else None
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope=db_scope("session"))
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Per test on PostgreSQL (a database of its own); one for the session on SQLite."""
    return make_settings()


@pytest.fixture(scope=db_scope("session"))
def services(settings: Settings) -> Iterator[Services]:
    svc = build_services(settings)
    yield svc
    svc.close()


@pytest.fixture
def own_services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    """Services on a database of this test's own, for a test that acts on every key at once (the
    expiry sweep, a master-key rotation). On PostgreSQL ``services`` is already this test's own; on
    SQLite it is shared by the session, and this is a data dir (so a database) of its own."""
    svc = build_services(make_settings())
    yield svc
    svc.close()


@pytest.fixture(scope=db_scope("session"))
def server(settings: Settings, services: Services) -> Iterator[ThreadServer]:
    """A live server sharing ``services`` with the test process: per test on PostgreSQL, one for the
    session on SQLite."""
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
