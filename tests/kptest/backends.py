"""Which database (and Redis) the suite runs against, and a database of its own for every test.

``KEYPLANE_TEST_BACKEND=sqlite`` (default) or ``postgres``. Outside CI a missing service skips; with
``CI=true`` it fails.

On PostgreSQL the run migrates one template database once (:class:`DatabasePool`), and every
``make_settings()`` call gets a database of its own, cloned from that template (``CREATE DATABASE
... TEMPLATE``), and a Redis key prefix of its own. A background thread keeps a few clones ready and
drops used ones (``DROP DATABASE ... WITH (FORCE)``), so neither waits in a test. The clone is
dropped when whatever asked for it ends: the fixture being set up when ``make_settings()`` was
called (a test's ``settings``, a module's server), else the test whose body called it (see
:func:`owned_by` and the hooks in ``tests/conftest.py``). So the ``settings``, ``services`` and
``server`` fixtures, which are per test on PostgreSQL (:func:`db_scope`), give each test a database
state of its own. On SQLite every ``make_settings()`` call has always had a data dir (so a database)
of its own; the shared fixtures stay shared there (see :func:`db_scope`).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pytest

if TYPE_CHECKING:
    import psycopg

Scope = Literal["session", "package", "module", "class", "function"]

PG_ADMIN = os.environ.get("KEYPLANE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KEYPLANE_TEST_REDIS", "redis://127.0.0.1:6379/0")

# Clones kept ready ahead of the tests that will ask for them.
READY_CLONES = 3


def backend_name() -> str:
    return os.environ.get("KEYPLANE_TEST_BACKEND", "sqlite")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what} is not reachable, and CI=true makes that a failure, not a skip")
    pytest.skip(f"{what} is not reachable")


def db_scope(shared: Scope) -> Callable[[str, pytest.Config], Scope]:
    """The scope for a fixture that holds the database (settings, services, a server): per test on
    PostgreSQL, so that each test gets a database of its own; ``shared`` on SQLite, which keeps the
    SQLite run as cheap as it was (there, tests that share such a fixture share its database).

    ``@pytest.fixture(scope=db_scope("module"))``. A fixture with this scope must depend only on
    fixtures of the same or a wider one (on PostgreSQL it is per test)."""

    def scope(fixture_name: str, config: pytest.Config) -> Scope:
        return "function" if backend_name() == "postgres" else shared

    return scope


@dataclass(frozen=True)
class Backend:
    name: str
    redis_url: str | None  # None on SQLite
    redis_prefix: str  # this run's: every Redis prefix the suite hands out starts with it
    pool: DatabasePool | None = field(default=None, repr=False)  # None on SQLite

    @property
    def postgres(self) -> bool:
        return self.pool is not None

    def new_database(self) -> str:
        """A database of its own (migrated, no rows), dropped when its owner ends (:func:`owned_by`)."""
        assert self.pool is not None, "SQLite: every data dir has a database of its own"
        pool = self.pool
        name = pool.take()
        _owner_finalizer(lambda: pool.release(name))
        return pool.url(name)

    def new_redis_prefix(self) -> str:
        return f"{self.redis_prefix}{secrets.token_hex(4)}:"


def _pg_admin_conn() -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(PG_ADMIN.replace("postgresql+psycopg", "postgresql"), autocommit=True, connect_timeout=3)


def _pg_url(name: str) -> str:
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except Exception:
        return False


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (not migrated) for the duration of the block."""
    try:
        admin = _pg_admin_conn()
    except Exception:
        unavailable("PostgreSQL at " + PG_ADMIN)
        raise
    name = f"kp_test_{os.getpid()}_{secrets.token_hex(4)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_url(name)
    finally:
        with _pg_admin_conn() as admin2:
            admin2.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class DatabasePool:
    """One migrated template database for the run, and clones of it made and dropped in the background.

    Cloning a small database is fast (about 0.1 s with PostgreSQL 15's default WAL_LOG strategy; the
    FILE_COPY strategy measured 0.8 s here, as it checkpoints twice), but dropping one forces a
    checkpoint (0.1 s to several seconds on a busy machine), so both happen in a thread of their own:
    ``take()`` normally finds a clone ready, and ``release()`` only queues the drop.
    """

    def __init__(self, ready: int = READY_CLONES) -> None:
        self.run = f"{os.getpid()}_{secrets.token_hex(3)}"
        self.template = f"kp_tpl_{self.run}"
        self._want = ready
        self._seq = 0
        self._ready: deque[str] = deque()
        self._doomed: deque[str] = deque()
        self._waiting = 0
        self._closing = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._admin: Any = None

    def url(self, name: str) -> str:
        return _pg_url(name)

    def start(self) -> None:
        """Create and migrate the template (once per run), then start the clone maker."""
        from keyplane.db import Database
        from keyplane.settings import Settings

        self._admin = _pg_admin_conn()
        self._admin.execute(f'CREATE DATABASE "{self.template}"')
        with tempfile.TemporaryDirectory(prefix="kp-template-") as data:
            settings = Settings(data_dir=Path(data), database_url=self.url(self.template), redis_url=None)
            db = Database(settings)
            try:
                db.migrate()  # the schema only: each clone's first start names its active master key
            finally:
                db.dispose()
        # No connection may reach the template from now on (a clone needs it idle).
        self._admin.execute(f'ALTER DATABASE "{self.template}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
        self._thread = threading.Thread(target=self._work, name="kptest-db-pool", daemon=True)
        self._thread.start()

    def take(self) -> str:
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while not self._ready:
                    if self._error is not None:
                        raise RuntimeError(f"cannot clone the template database: {self._error}") from self._error
                    self._cond.wait()
                return self._ready.popleft()
            finally:
                self._waiting -= 1
                self._cond.notify_all()  # below the target: make another

    def release(self, name: str) -> None:
        with self._cond:
            self._doomed.append(name)
            self._cond.notify_all()

    def _next_job(self) -> tuple[str, str] | None:
        with self._cond:
            while True:
                if self._closing:
                    return ("drop", self._doomed.popleft()) if self._doomed else None
                if self._error is None and (self._waiting or len(self._ready) < self._want):
                    self._seq += 1
                    return "create", f"kp_t_{self.run}_{self._seq}"
                if self._doomed:
                    return "drop", self._doomed.popleft()
                self._cond.wait()

    def _work(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # never leave take() waiting on a dead thread
            with self._cond:
                self._error = self._error or e
                self._cond.notify_all()

    def _serve(self) -> None:
        conn = _pg_admin_conn()
        try:
            while (job := self._next_job()) is not None:
                kind, name = job
                try:
                    if kind == "create":
                        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
                    else:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                except Exception as e:
                    if kind == "create":
                        with self._cond:
                            self._error = e
                            self._cond.notify_all()
                    # A failed drop leaves the database behind: close() drops what is left.
                    if conn.closed or conn.broken:
                        conn = _pg_admin_conn()
                    continue
                if kind == "create":
                    with self._cond:
                        self._ready.append(name)
                        self._cond.notify_all()
        finally:
            conn.close()

    def close(self) -> None:
        """Drop every clone still there, then the template."""
        with self._cond:
            self._closing = True
            self._doomed.extend(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=300)
        admin = self._admin or _pg_admin_conn()
        try:
            admin.execute(f'ALTER DATABASE "{self.template}" WITH IS_TEMPLATE false')
            admin.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            left = admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"kp_t_{self.run}_%",)
            ).fetchall()
            for (name,) in left:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            admin.close()


# -- who owns a database -------------------------------------------------------------------------
# ``make_settings()`` is session-scoped, but the database it hands out belongs to its caller: the
# fixture being set up (dropped when that fixture is torn down) or the running test (dropped when
# the test ends). tests/conftest.py pushes each onto this stack from pytest's hooks.


class _Finalizing(Protocol):
    def addfinalizer(self, finalizer: Callable[[], object]) -> None: ...


_owners: list[_Finalizing] = []
_orphans: list[Callable[[], object]] = []  # asked for outside any fixture or test: dropped at the end


@contextmanager
def owned_by(owner: _Finalizing) -> Iterator[None]:
    """Databases handed out inside the block are dropped by ``owner.addfinalizer``."""
    _owners.append(owner)
    try:
        yield
    finally:
        _owners.pop()


def _owner_finalizer(finalizer: Callable[[], object]) -> None:
    if _owners:
        _owners[-1].addfinalizer(finalizer)
    else:
        _orphans.append(finalizer)


@contextmanager
def backend() -> Iterator[Backend]:
    name = backend_name()
    prefix = f"kptest:{secrets.token_hex(4)}:"
    if name == "sqlite":
        yield Backend("sqlite", None, prefix)
        return
    if name != "postgres":
        raise pytest.UsageError(f"KEYPLANE_TEST_BACKEND must be sqlite or postgres, not {name!r}")
    if not redis_available():
        unavailable("Redis at " + REDIS_URL)
    try:
        _pg_admin_conn().close()
    except Exception:
        unavailable("PostgreSQL at " + PG_ADMIN)
        raise
    pool = DatabasePool()
    try:
        pool.start()
    except BaseException:
        with suppress(Exception):
            pool.close()
        raise
    try:
        yield Backend("postgres", REDIS_URL, prefix, pool)
    finally:
        while _orphans:
            _orphans.pop()()
        pool.close()
        _flush_redis_prefix(prefix)


def _flush_redis_prefix(prefix: str) -> None:
    try:
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=prefix + "*", count=1000):
            r.delete(key)
    except Exception:
        pass
