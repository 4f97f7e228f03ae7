"""Engine, sessions and migrations.

Services own their transactions through :meth:`Database.transaction`. On SQLite a write transaction
starts with ``BEGIN IMMEDIATE`` so that two writers serialise at the start instead of failing at
commit; on PostgreSQL services take row locks where they need them.

Driver errors that mean "the database is not there" become :class:`ServiceUnavailable`, so that
callers fail closed with a clear 503 and never see SQLAlchemy's exceptions.

Every wait on the database is bounded (``KEYPLANE_DB_*_TIMEOUT_S``): connecting, waiting for a
pooled connection, a statement or lock wait (PostgreSQL's ``statement_timeout`` and
``idle_in_transaction_session_timeout``; SQLite's busy timeout), and a server that goes silent
mid-statement. That last one no server-side timeout can catch (the server's answer is what is
missing) and TCP keepalives miss it whenever something on the path still acknowledges packets, so a
watchdog thread cuts any PostgreSQL connection that has waited on one statement for longer than
the statement timeout plus a margin: the waiting request then fails with a 503 instead of hanging,
and the server rolls back the transaction it was part of.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, MetaData, create_engine, event, exc, make_url, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from keyplane.errors import ServiceUnavailable
from keyplane.settings import Settings

log = logging.getLogger("keyplane.db")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Errors that mean the database is unreachable or broken, as opposed to a constraint violation.
UNAVAILABLE_ERRORS = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_engine(settings: Settings, *, bounded: bool = True) -> Engine:
    """The engine for ``settings``. ``bounded=False`` (migrations only) lifts the statement time
    limits: a migration may legitimately take longer than any request should."""
    url = settings.sqlalchemy_url
    busy_ms = int(settings.db_statement_timeout_s * 1000)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_timeout=settings.db_pool_timeout_s,
            connect_args={"check_same_thread": False, "timeout": settings.db_statement_timeout_s},
        )
        _configure_sqlite(engine, busy_ms)
        return engine
    connect_args: dict[str, Any] = {
        # libpq counts whole seconds (psycopg raises anything below 2 to 2).
        "connect_timeout": max(2, math.ceil(settings.db_connect_timeout_s)),
        # A dead peer or a path that drops packets: the kernel gives up on unacknowledged data after
        # tcp_user_timeout, and probes an idle connection after a few seconds.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": busy_ms,
    }
    if bounded:
        connect_args["options"] = (
            f"-c statement_timeout={busy_ms} -c lock_timeout={busy_ms} "
            f"-c idle_in_transaction_session_timeout={2 * busy_ms}"
        )
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args=connect_args,
    )
    if bounded:
        _configure_postgres(engine, _SilenceWatchdog(settings.db_statement_timeout_s + _SILENCE_MARGIN_S))
    return engine


def _configure_sqlite(engine: Engine, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so writes can ask for IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("keyplane_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


# How much longer than the statement timeout a PostgreSQL server may stay silent before the
# connection is cut (the server's own cancellation needs a moment to arrive), and how often the
# watchdog looks.
_SILENCE_MARGIN_S = 1.0
_WATCH_TICK_S = 0.1


def _configure_postgres(engine: Engine, watchdog: _SilenceWatchdog) -> None:
    # Replaces pool_pre_ping: the same liveness check, but on a connection the watchdog already
    # watches, so a silent server cannot hang the check either. A failed check makes the pool
    # retry with a fresh connection (SQLAlchemy's documented DisconnectionError protocol).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        watchdog.watch(dbapi_conn)

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as e:
            raise exc.DisconnectionError("the database connection is gone") from e
        if not alive:
            raise exc.DisconnectionError("the database connection is gone")

    engine.dialect.keyplane_watchdog = watchdog  # type: ignore[attr-defined]


class _SilenceWatchdog:
    """Cuts a PostgreSQL connection that has waited on one server answer for longer than ``limit_s``.

    A connection counts as waiting while libpq reports a command in progress
    (``TransactionStatus.ACTIVE``); the watchdog samples every connection of the engine every
    ``_WATCH_TICK_S``. Cutting means shutting the socket down: the blocked call returns at once
    with a connection error, SQLAlchemy discards the connection, and the server, which sees the
    session end, rolls its transaction back.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.cut = 0  # connections cut, for tests and logs
        self._conns: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._since: dict[int, float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, dbapi_conn: Any) -> None:
        with self._lock:
            self._conns[id(dbapi_conn)] = dbapi_conn
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="keyplane-db-watchdog", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        from psycopg.pq import TransactionStatus

        while True:
            time.sleep(_WATCH_TICK_S)
            now = time.monotonic()
            with self._lock:
                conns = list(self._conns.items())
            alive = set()
            for key, conn in conns:
                alive.add(key)
                try:
                    waiting = not conn.closed and conn.pgconn.transaction_status == TransactionStatus.ACTIVE
                except Exception:
                    waiting = False
                if not waiting:
                    self._since.pop(key, None)
                    continue
                since = self._since.setdefault(key, now)
                if now - since > self.limit_s:
                    self._since.pop(key, None)
                    self._cut(conn)
            for key in list(self._since):
                if key not in alive:
                    del self._since[key]

    def _cut(self, conn: Any) -> None:
        try:
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=os.dup(fd))
        except Exception:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()
        self.cut += 1
        log.warning("cut a database connection: the server sent nothing for %.1f s", self.limit_s)


class Database:
    """The engine plus the two ways in: a write transaction and a read session."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        write_engine = self.engine.execution_options(keyplane_write=True)
        self._write = sessionmaker(bind=write_engine, expire_on_commit=False, autoflush=False)
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False, autoflush=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any error."""
        try:
            with self._write() as session, session.begin():
                yield session
        except UNAVAILABLE_ERRORS as e:
            raise ServiceUnavailable("the database is unavailable") from e

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; it never commits."""
        try:
            with self._read() as session, session.begin():
                yield session
                session.rollback()
        except UNAVAILABLE_ERRORS as e:
            raise ServiceUnavailable("the database is unavailable") from e

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except UNAVAILABLE_ERRORS as e:
            raise ServiceUnavailable("the database is unavailable") from e

    def migrate(self) -> None:
        from keyplane.migrations import upgrade

        if self.is_sqlite:
            upgrade(self.engine)
            return
        # Without the statement time limits: a migration may take longer than any request should.
        engine = make_engine(self.settings, bounded=False)
        try:
            upgrade(engine)
        finally:
            engine.dispose()

    def describe(self) -> str:
        """Where the database is, for messages: the SQLite file, or the URL without its password."""
        url = make_url(self.settings.sqlalchemy_url)
        if self.is_sqlite:
            return f"the database file {url.database}"
        return "the database " + url.set(drivername="postgresql").render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()
