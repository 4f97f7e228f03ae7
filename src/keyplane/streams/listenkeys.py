"""listenKeys: the bearer tokens of REST user-data streams (``/api/v3/userDataStream``, then
``/ws/<listenKey>``), as Binance issues them.

A listenKey names one API key's account stream. It is valid for ``TTL_MS`` (60 minutes) after it
is created or last kept alive (``PUT``), and ends at ``DELETE``, or when its key stops working (the
user-data guard closes its streams then, as for any stream). It travels in a URL, so it is treated
as a secret: only its SHA-256 is stored, it is never logged, and a key holds at most ``MAX_PER_KEY``
of them (a new one beyond that ends the oldest). Unlike Binance, ``POST`` returns a new listenKey
each time rather than the one already open: the server cannot show a stored token again.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from keyplane.db import Database
from keyplane.errors import KeyplaneError
from keyplane.exchange.sql import read, write

TTL_MS = 60 * 60 * 1000
MAX_PER_KEY = 10
LENGTH = 60
_ALPHABET = string.ascii_letters + string.digits

_INSERT = "INSERT INTO ex_listen_keys (digest, user_id, key_id, created_ms, expires_ms) VALUES (:d, :u, :k, :now, :exp)"
_OF_KEY = "SELECT digest FROM ex_listen_keys WHERE key_id = :k AND expires_ms > :now ORDER BY created_ms DESC"
_DELETE = "DELETE FROM ex_listen_keys WHERE digest = :d"
_DELETE_EXPIRED = "DELETE FROM ex_listen_keys WHERE expires_ms <= :now"
_EXTEND = "UPDATE ex_listen_keys SET expires_ms = :exp WHERE digest = :d AND key_id = :k AND expires_ms > :now"
_CLOSE = "DELETE FROM ex_listen_keys WHERE digest = :d AND key_id = :k"
_FIND = "SELECT user_id, key_id FROM ex_listen_keys WHERE digest = :d AND expires_ms > :now"


class ListenKeyUnknown(KeyplaneError):
    code = "listen_key_unknown"
    status = 400
    binance_code = -1125


@dataclass(frozen=True, slots=True)
class ListenKey:
    user_id: int
    key_id: str
    digest: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def looks_like(text: str) -> bool:
    """True for a path segment in a listenKey's shape (a stream name has a "@" or is shorter)."""
    return len(text) == LENGTH and text.isascii() and text.isalnum()


class ListenKeys:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def create(self, user_id: int, key_id: str) -> str:
        token = "".join(secrets.choice(_ALPHABET) for _ in range(LENGTH))
        now = self._now()
        with write(self.db) as db:
            db.execute(_DELETE_EXPIRED, {"now": now})
            for old in [r[0] for r in db.all(_OF_KEY, {"k": key_id, "now": now})][MAX_PER_KEY - 1 :]:
                db.execute(_DELETE, {"d": old})
            db.execute(_INSERT, {"d": digest(token), "u": user_id, "k": key_id, "now": now, "exp": now + TTL_MS})
        return token

    def keep_alive(self, key_id: str, token: str) -> None:
        now = self._now()
        with write(self.db) as db:
            if db.rowcount(_EXTEND, {"exp": now + TTL_MS, "d": digest(token), "k": key_id, "now": now}) != 1:
                raise ListenKeyUnknown(_UNKNOWN)

    def close(self, key_id: str, token: str) -> None:
        with write(self.db) as db:
            if db.rowcount(_CLOSE, {"d": digest(token), "k": key_id}) != 1:
                raise ListenKeyUnknown(_UNKNOWN)

    def find(self, token: str) -> ListenKey | None:
        """The listenKey's key and account, None if it does not exist or has expired."""
        d = digest(token)
        with read(self.db) as db:
            row = db.one(_FIND, {"d": d, "now": self._now()})
        return None if row is None else ListenKey(int(row[0]), str(row[1]), d)

    def valid(self, digests: Iterable[str]) -> set[str]:
        """Those of ``digests`` whose listenKey is still open."""
        wanted = sorted(set(digests))
        if not wanted:
            return set()
        now = self._now()
        with read(self.db) as db:
            return {d for d in wanted if db.one(_FIND, {"d": d, "now": now}) is not None}


_UNKNOWN = (
    "This listenKey does not exist: it expired (60 minutes after its last keep-alive), was closed, or "
    "belongs to another API key. Create one with POST /api/v3/userDataStream."
)
