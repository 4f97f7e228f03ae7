"""Master-key rotation in three stages, each safe while servers keep running.

1. **add** (:meth:`MasterKeyRotation.add_key`): a new key joins the keyfile. Nothing seals under it
   yet: the active key is named in the database, not by the order of the file. A process that
   meets the new key id (as the active key, or in a ciphertext) re-reads the file. With
   ``KEYPLANE_MASTER_KEYS`` the operator adds the key to every node's environment and restarts
   the nodes one by one instead; they keep sealing under the active key meanwhile, so a fleet with
   old and new environments opens every secret.
2. **rotate** (:meth:`MasterKeyRotation.rotate`): in ONE transaction, name the new key active and
   re-encrypt every API secret (current and in-grace previous) and every TOTP secret under it.
   Each encryption reads the active key in its own transaction with a share lock, and the rotation
   takes the update lock, so a transaction that sealed a secret under the old key commits before
   the rotation re-reads the rows, and every later one seals under the new key. Rows another
   transaction holds at that moment are skipped rather than waited for (waiting could deadlock with
   a transaction that holds the row and waits for the keyring row); follow-up passes, after the
   commit, re-encrypt them.
3. **drop** (:meth:`MasterKeyRotation.drop`): only on request, and only after a query over every
   stored ciphertext proves that none names the key (and it is not the active one). The key then
   leaves the keyfile; with ``KEYPLANE_MASTER_KEYS`` the operator removes it from the environment.

A ciphertext that does not open (tampered, or under a key no longer held) is left as it is and
counted: it was already unusable, and it must not block the rotation for everyone else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from keyplane.accounts.models import TotpCredential
from keyplane.audit.events import EventType
from keyplane.audit.service import record as audit
from keyplane.crypto.keyring import new_master_key, write_keyfile
from keyplane.crypto.secretbox import SecretBoxError, api_secret_aad, key_id_prefix, token_key_id, totp_secret_aad
from keyplane.db import Database
from keyplane.keys.models import ApiKey
from keyplane.masterkeys import MasterKeyError, MasterKeyInUse, MasterKeys

log = logging.getLogger("keyplane.keys")

# Follow-up passes after the rotating transaction, for rows another transaction held at the time.
# Nothing seals under the old key once the rotation has committed, so each pass can only shrink
# what is left; a handful is plenty.
_FOLLOW_UP_PASSES = 5

_API_COLUMNS: tuple[InstrumentedAttribute[str | None], ...] = (
    ApiKey.secret_ciphertext,
    ApiKey.previous_secret_ciphertext,
)


@dataclass(frozen=True, slots=True)
class KeyringStatus:
    active: str
    keys: list[str]  # ids, oldest first
    source: str  # "file" or "env"
    ciphertexts: dict[str, int]  # key id -> stored ciphertexts that name it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RotationResult:
    active: str
    previous: str
    reencrypted: int
    unreadable: int
    remaining: int  # ciphertexts still under another key (unreadable ones, or rows still held)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _not_under(column: InstrumentedAttribute[str | None], kid: str) -> ColumnElement[bool]:
    return and_(column.is_not(None), ~column.startswith(key_id_prefix(kid)))


def _under(column: InstrumentedAttribute[str | None], kid: str) -> ColumnElement[bool]:
    return column.startswith(key_id_prefix(kid))


def _count(s: Session, match: Callable[[InstrumentedAttribute[str | None], str], ColumnElement[bool]], kid: str) -> int:
    """How many stored ciphertexts (API secrets, TOTP secrets) ``match`` ``kid``."""
    api = s.execute(
        select(func.count()).select_from(ApiKey).where(or_(*(match(c, kid) for c in _API_COLUMNS)))
    ).scalar_one()
    totp = s.execute(
        select(func.count()).select_from(TotpCredential).where(match(TotpCredential.secret_ciphertext, kid))
    ).scalar_one()
    return int(api) + int(totp)


class MasterKeyRotation:
    def __init__(self, db: Database, master: MasterKeys) -> None:
        self.db = db
        self.master = master

    # -- reading --------------------------------------------------------------------------------

    def status(self) -> KeyringStatus:
        self.master.ring.reload()
        counts: dict[str, int] = {}
        with self.db.read() as s:
            active = self.master.active_id(s)
            tokens = [t for col in _API_COLUMNS for t in s.execute(select(col).where(col.is_not(None))).scalars()]
            tokens += list(s.execute(select(TotpCredential.secret_ciphertext)).scalars())
        for token in tokens:
            try:
                kid = token_key_id(token or "")
            except SecretBoxError:
                kid = "malformed"
            counts[kid] = counts.get(kid, 0) + 1
        return KeyringStatus(
            active=active,
            keys=self.master.ring.keyring.ids,
            source="env" if self.master.keyfile is None else "file",
            ciphertexts=counts,
        )

    def count_naming(self, s: Session, kid: str) -> int:
        """How many stored ciphertexts name ``kid``: the proof :meth:`drop` needs to be zero."""
        return _count(s, _under, kid)

    # -- stage 1: add ---------------------------------------------------------------------------

    def add_key(self, *, actor: str = "admin:cli") -> str:
        """Add a fresh key to the keyfile (not active yet); returns its id.

        Raises MasterKeyError when the keys come from KEYPLANE_MASTER_KEYS: only the operator can
        change every node's environment."""
        path = self.master.keyfile
        if path is None:
            raise MasterKeyError(
                "the master keys come from KEYPLANE_MASTER_KEYS: add a key from "
                "`keyplane admin generate-master-key` to it on every node, restart them one by one, "
                "then run `keyplane admin rotate-master-key`"
            )
        self.master.ring.reload()
        ring = self.master.ring.keyring.with_new_key(new_master_key())
        try:
            write_keyfile(path, ring)
        except OSError as e:
            raise MasterKeyError(f"cannot write the master keyfile {path}: {e.strerror or e}") from e
        self.master.ring.reload()
        with self.db.transaction() as s:
            audit(s, EventType.MASTER_KEY_ADDED, actor=actor, data={"key_id": ring.newest_id})
        return ring.newest_id

    # -- stage 2: rotate ------------------------------------------------------------------------

    def rotate(self, to: str | None = None, *, actor: str = "admin:cli") -> RotationResult:
        """Name ``to`` (default: the newest key held) active and re-encrypt every secret under it,
        in one transaction; then follow-up passes for rows held by other transactions meanwhile."""
        self.master.ring.reload()
        target = to or self.master.ring.keyring.newest_id
        if target not in self.master.ring.keyring:
            raise MasterKeyError(f"master key {target} is not in the keyring; add it first")
        count = unreadable = 0
        with self.db.transaction() as s:
            # Lock the rows first and the keyring row second: a transaction that holds one of these
            # rows and then reads the keyring row (to seal) must not find it locked by us.
            self._api_rows(s, target, skip_locked=False)
            self._totp_rows(s, target, skip_locked=False)
            previous = self.master.active_id(s, for_update=True)
            self.master.set_active(s, target)
            # Rows sealed by transactions that committed while we waited for the keyring row are
            # visible now; any of those held by a transaction that waits for us are skipped.
            c, u = self._reencrypt(s, target, skip_locked=True)
            count, unreadable = count + c, unreadable + u
            audit(
                s,
                EventType.MASTER_KEY_ROTATED,
                actor=actor,
                data={"from": previous, "to": target, "reencrypted": count, "unreadable": unreadable},
            )
        remaining = self._remaining(target)
        passes = 0
        while remaining > unreadable and passes < _FOLLOW_UP_PASSES:
            with self.db.transaction() as s:
                c, u = self._reencrypt(s, target, skip_locked=False)
            count += c
            unreadable = u
            remaining = self._remaining(target)
            passes += 1
        return RotationResult(target, previous, count, unreadable, remaining)

    def _api_rows(self, s: Session, target: str, *, skip_locked: bool) -> list[ApiKey]:
        query = select(ApiKey).where(or_(*(_not_under(c, target) for c in _API_COLUMNS))).order_by(ApiKey.id)
        return list(s.execute(query.with_for_update(skip_locked=skip_locked)).scalars())

    def _totp_rows(self, s: Session, target: str, *, skip_locked: bool) -> list[TotpCredential]:
        query = (
            select(TotpCredential)
            .where(_not_under(TotpCredential.secret_ciphertext, target))
            .order_by(TotpCredential.user_id)
        )
        return list(s.execute(query.with_for_update(skip_locked=skip_locked)).scalars())

    def _reencrypt(self, s: Session, target: str, *, skip_locked: bool) -> tuple[int, int]:
        ring = self.master.ring
        count = unreadable = 0

        def reseal(token: str, aad: bytes, what: str) -> str:
            nonlocal count, unreadable
            try:
                plain = ring.decrypt(token, aad)
            except SecretBoxError:
                log.warning("%s does not decrypt; left as it is", what)
                unreadable += 1
                return token
            count += 1
            return ring.encrypt(plain, aad, key_id=target)

        for row in self._api_rows(s, target, skip_locked=skip_locked):
            for attr in ("secret_ciphertext", "previous_secret_ciphertext"):
                token = getattr(row, attr)
                if token and not token.startswith(key_id_prefix(target)):
                    what = f"the {attr} of key {row.public_id}"
                    setattr(row, attr, reseal(token, api_secret_aad(row.public_id), what))
        for cred in self._totp_rows(s, target, skip_locked=skip_locked):
            what = f"TOTP secret of user {cred.user_id}"
            cred.secret_ciphertext = reseal(cred.secret_ciphertext, totp_secret_aad(cred.user_id), what)
        return count, unreadable

    def _remaining(self, target: str) -> int:
        with self.db.read() as s:
            return _count(s, _not_under, target)

    # -- stage 3: drop --------------------------------------------------------------------------

    def drop(self, kid: str, *, actor: str = "admin:cli") -> None:
        """Remove ``kid`` from the keyfile, after proving that no stored ciphertext names it.

        Raises MasterKeyInUse (it is active, or ciphertexts name it) or MasterKeyError (no such
        key). With KEYPLANE_MASTER_KEYS the proof and the audit event are all this does: the
        operator then removes the key from every node's environment."""
        self.master.ring.reload()
        ring = self.master.ring.keyring
        if kid not in ring:
            raise MasterKeyError(f"master key {kid} is not in the keyring")
        with self.db.transaction() as s:
            # The update lock keeps a rotation from making this key active again meanwhile.
            active = self.master.active_id(s, for_update=True)
            if kid == active:
                raise MasterKeyInUse(f"master key {kid} is the active key; rotate to another key first")
            naming = self.count_naming(s, kid)
            if naming:
                raise MasterKeyInUse(
                    f"{naming} stored ciphertext(s) still name master key {kid}; run rotate-master-key again"
                )
            if self.master.keyfile is not None:
                try:
                    write_keyfile(self.master.keyfile, ring.without(kid))
                except OSError as e:
                    raise MasterKeyError(f"cannot write the master keyfile: {e.strerror or e}") from e
            audit(s, EventType.MASTER_KEY_DROPPED, actor=actor, data={"key_id": kid})
        self.master.ring.reload()
