"""Where the master keyring lives, and which of its keys seals new secrets.

Key material never enters the database (a copy of it would then hold both the ciphertexts and the
keys that open them). It comes from one of:

- ``KEYPLANE_MASTER_KEYS``: comma-separated keys in the environment, fixed for the life of a
  process;
- ``KEYPLANE_MASTER_KEYS_FILE``: a keyfile every process reads, re-read when a key id is missing;
- neither, on SQLite only: ``master.keys`` in the data directory, generated on first start.

Which key is *active* (seals every new secret) is one row in the database (``master_keyring``),
read in the same transaction as each encryption, with a share lock on PostgreSQL. So every process
agrees on it, a process picks up a new active key before it next encrypts, and a rotation that
changes it (with an update lock on that row) waits for every transaction that is sealing a secret
under the old key and is itself waited for by every later one. Opening a ciphertext needs no
database: the ciphertext names its key.

The rotation stages (add, rotate, drop) are ``keys/rotation.py``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from keyplane.crypto.keyring import MasterKeyring, load_or_create_keyfile, parse_keyring, read_keyfile
from keyplane.crypto.secretbox import SecretBoxError
from keyplane.db import Base, Database, UTCDateTime, utcnow
from keyplane.errors import KeyplaneError
from keyplane.settings import Settings

_STATE_ID = 1


class MasterKeyError(KeyplaneError):
    code = "master_key_error"
    status = 500


class MasterKeyInUse(MasterKeyError):
    """A master key cannot be dropped: it is active, or a stored ciphertext still names it."""

    code = "master_key_in_use"
    status = 409


class MasterKeyState(Base):
    """The one row that names the active master key (by id; never the key itself)."""

    __tablename__ = "master_keyring"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active_key_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)


def default_keyfile(data_dir: Path) -> Path:
    return data_dir / "master.keys"


class MasterKeys:
    """The process's keyring (``keyring``) plus the database's choice of active key."""

    def __init__(self, db: Database, keyring: MasterKeyring, keyfile: Path | None) -> None:
        self.db = db
        self.ring = keyring
        self.keyfile = keyfile  # None: the keys come from KEYPLANE_MASTER_KEYS

    def __repr__(self) -> str:
        return f"MasterKeys(keyfile={self.keyfile}, ids={self.ring.keyring.ids})"

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> MasterKeys:
        try:
            if settings.master_keys is not None and settings.master_keys_file is not None:
                raise MasterKeyError("set KEYPLANE_MASTER_KEYS or KEYPLANE_MASTER_KEYS_FILE, not both")
            if settings.master_keys is not None:
                text = settings.master_keys.get_secret_value()
                return cls(db, MasterKeyring(lambda: parse_keyring(text), reloadable=False), None)
            if settings.master_keys_file is not None:
                path = settings.master_keys_file
                return cls(db, MasterKeyring(lambda: read_keyfile(path), reloadable=True), path)
            if not settings.is_sqlite:
                # Every node must open every secret: a per-node generated keyfile would not do.
                raise MasterKeyError(
                    "KEYPLANE_MASTER_KEYS or KEYPLANE_MASTER_KEYS_FILE is required with PostgreSQL "
                    "(all nodes share the keys); make a key with: keyplane admin generate-master-key"
                )
            path = default_keyfile(settings.data_dir)
            load_or_create_keyfile(path)
            return cls(db, MasterKeyring(lambda: read_keyfile(path), reloadable=True), path)
        except (SecretBoxError, OSError) as e:
            raise MasterKeyError(f"master key: {e}") from e

    # -- the active key -----------------------------------------------------------------------

    def active_id(self, s: Session, *, for_update: bool = False) -> str:
        """The active key id, read in ``s``'s transaction: with a share lock, or an update lock for
        a rotation (both mean nothing on SQLite, whose write transactions already run one at a time)."""
        query = select(MasterKeyState).where(MasterKeyState.id == _STATE_ID)
        query = query.with_for_update() if for_update else query.with_for_update(read=True)
        row = s.execute(query).scalar_one_or_none()
        if row is None or row.active_key_id is None:
            raise MasterKeyError("the database names no active master key; restart the server to set it")
        return row.active_key_id

    def set_active(self, s: Session, kid: str) -> None:
        s.execute(
            update(MasterKeyState).where(MasterKeyState.id == _STATE_ID).values(active_key_id=kid, changed_at=utcnow())
        )

    def ensure_active(self) -> str:
        """At start-up: name the newest key active if the database names none yet, and check that
        this process holds the active key (a node that lacks it could open none of the secrets
        sealed since the last rotation, so it refuses to start)."""
        newest = self.ring.keyring.newest_id
        with self.db.transaction() as s:
            s.execute(
                update(MasterKeyState)
                .where(MasterKeyState.id == _STATE_ID, MasterKeyState.active_key_id.is_(None))
                .values(active_key_id=newest, changed_at=utcnow())
            )
            active = self.active_id(s)
        try:
            self.ring.require(active)
        except SecretBoxError as e:
            where = "KEYPLANE_MASTER_KEYS" if self.keyfile is None else str(self.keyfile)
            raise MasterKeyError(
                f"the active master key {active} is not in {where}; add it there (every node needs it)"
            ) from e
        return active

    # -- sealing and opening ------------------------------------------------------------------

    def encrypt(self, s: Session, plaintext: bytes, aad: bytes) -> str:
        """Seal under the active key, read in ``s``'s transaction (so a concurrent rotation either
        waits for this transaction or is waited for by it). Raises MasterKeyError if this process
        does not hold the active key: better to refuse than to seal under a key others retire."""
        active = self.active_id(s)
        try:
            return self.ring.encrypt(plaintext, aad, key_id=active)
        except SecretBoxError as e:
            raise MasterKeyError(f"this process does not hold the active master key {active}") from e

    def decrypt(self, token: str, aad: bytes) -> bytes:
        """Open a ciphertext. Raises SecretBoxError (UnknownMasterKey if its key is not held even
        after re-reading the keyfile)."""
        return self.ring.decrypt(token, aad)
