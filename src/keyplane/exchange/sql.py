"""Plain SQL on the DBAPI cursor of a SQLAlchemy connection: the one SQL style of exchange/.

SQLAlchemy's per-statement bookkeeping costs more than SQLite takes to run an indexed statement,
and an order runs several. The statements here are written once with ``:name`` parameters (the
form sqlite3 takes) and translated to ``%(name)s`` for psycopg. They run on the same connection,
so inside the caller's transaction; transactions, pooling and error translation stay SQLAlchemy's.
Every statement of the exchange goes through :class:`Raw`: :func:`write` and :func:`read` open a
transaction for it, and ``Raw(session.connection())`` joins a session's (when an audit event must
commit with the change).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Engine

from keyplane.db import UNAVAILABLE_ERRORS, Database
from keyplane.errors import ServiceUnavailable


@contextmanager
def write(db: Database) -> Iterator[Raw]:
    """One write transaction like ``Database.transaction()`` (BEGIN IMMEDIATE on SQLite, the same
    fail-closed translation of a lost database), on a bare connection: the ORM session's
    bookkeeping is not needed for plain SQL and costs a third of an order's time."""
    engine = _write_engines.get(id(db.engine))
    if engine is None:
        engine = _write_engines[id(db.engine)] = db.engine.execution_options(keyplane_write=True)
    try:
        with engine.begin() as conn:
            yield Raw(conn)
    except UNAVAILABLE_ERRORS as e:
        raise ServiceUnavailable("the database is unavailable") from e


@contextmanager
def read(db: Database) -> Iterator[Raw]:
    """One read-only transaction (``Database.read()``: never commits), as a ``Raw`` cursor."""
    with db.read() as session, closing(Raw(session.connection())) as raw:
        yield raw


_write_engines: dict[int, Engine] = {}
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    return _PARAM.sub(r"%(\1)s", sql)


class Raw:
    """A cursor bound to ``conn``'s transaction."""

    __slots__ = ("_cur", "_error", "_pg", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._pg = conn.dialect.name == "postgresql"
        self._error: type[Exception] = conn.dialect.loaded_dbapi.Error
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        self._cur: Any = dbapi.cursor()

    def _sql(self, sql: str) -> str:
        return _pyformat(sql) if self._pg else sql

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        try:
            self._cur.execute(self._sql(sql), params or {})
        except self._error as e:
            # The same exception classes SQLAlchemy would raise (IntegrityError, OperationalError...),
            # so callers and Database.transaction() translate them as usual.
            raise exc.DBAPIError.instance(sql, None, e, self._error) from e
        return self._cur

    def many(self, sql: str, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        try:
            self._cur.executemany(self._sql(sql), rows)
        except self._error as e:
            raise exc.DBAPIError.instance(sql, None, e, self._error) from e

    def one(self, sql: str, params: Mapping[str, Any] | None = None) -> Sequence[Any] | None:
        return self.execute(sql, params).fetchone()  # type: ignore[no-any-return]

    def all(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Sequence[Any]]:
        return self.execute(sql, params).fetchall()  # type: ignore[no-any-return]

    def rowcount(self, sql: str, params: Mapping[str, Any]) -> int:
        return int(self.execute(sql, params).rowcount)

    def close(self) -> None:
        self._cur.close()
