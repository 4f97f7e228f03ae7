"""What the verification pipeline and the background tasks read and write of keys: the cacheable
:class:`KeyRecord` (secrets opened, verifiers built), the cache poller's change query, batched
last-used times, and the expiry sweep.

The lifecycle a person drives (create, change, rotate, revoke) is keys/service.py; this module
only records what happened to keys on their own (they were used, they expired).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from keyplane.audit.events import EventType
from keyplane.audit.service import record as audit
from keyplane.crypto.secretbox import api_secret_aad
from keyplane.db import Database, utcnow
from keyplane.keys.models import ApiKey
from keyplane.keys.record import Ed25519Verifier, HmacVerifier, KeyRecord, Verifier
from keyplane.keys.rules import SYSTEM, Actor, idle_expiry, key_info, restrictions_of, scopes_of
from keyplane.keys.scopes import usable_scopes
from keyplane.masterkeys import MasterKeys
from keyplane.settings import Settings


def audit_key(
    s: Session, event: EventType, row: ApiKey, actor: Actor, data: dict[str, Any] | None, now: dt.datetime
) -> None:
    """Record ``event`` on the key ``row``, by ``actor``, in ``s``'s transaction."""
    audit(s, event, actor=actor.name, ip=actor.ip, user_id=row.user_id, key_id=row.public_id, data=data, now=now)


class KeyRecords:
    def __init__(
        self, db: Database, settings: Settings, master: MasterKeys, notify: Callable[[Sequence[str]], None]
    ) -> None:
        self.db = db
        self.settings = settings
        self.master = master
        self._notify = notify

    def open_secret(self, token: str, public_id: str) -> bytes:
        """Decrypt a stored secret (bound to its API key). For verification and leak matching only."""
        return self.master.decrypt(token, api_secret_aad(public_id))

    def load(self, public_id: str, now: dt.datetime | None = None) -> KeyRecord | None:
        """The cacheable record for a key, with its verifiers built; None if there is no such key."""
        now = now or utcnow()
        with self.db.read() as s:
            row = s.execute(select(ApiKey).where(ApiKey.public_id == public_id)).scalar_one_or_none()
            if row is None:
                return None
            scopes, r = scopes_of(row), restrictions_of(row)
            verifiers: list[Verifier] = []
            if row.status == "active":
                grace_open = row.previous_valid_until is not None and row.previous_valid_until > now
                if row.key_type == "hmac" and row.secret_ciphertext:
                    verifiers.append(HmacVerifier(self.open_secret(row.secret_ciphertext, public_id)))
                    if grace_open and row.previous_secret_ciphertext and row.previous_valid_until:
                        prev = self.open_secret(row.previous_secret_ciphertext, public_id)
                        verifiers.append(HmacVerifier(prev, row.previous_valid_until.timestamp()))
                elif row.key_type == "ed25519" and row.public_key:
                    verifiers.append(Ed25519Verifier(base64.b64decode(row.public_key)))
                    if grace_open and row.previous_public_key and row.previous_valid_until:
                        prev_pub = base64.b64decode(row.previous_public_key)
                        verifiers.append(Ed25519Verifier(prev_pub, row.previous_valid_until.timestamp()))
            idle = idle_expiry(scopes, r, self.settings.idle_expiry_days)
            usable = usable_scopes(scopes, r)
            return KeyRecord(
                db_id=row.id,
                public_id=row.public_id,
                user_id=row.user_id,
                key_type=row.key_type,
                scopes=usable,
                withheld_scopes=scopes - usable,
                restrictions=r,
                status=row.status,
                verifiers=tuple(verifiers),
                version=row.version,
                expires_ts=None if r.expires_at is None else r.expires_at.timestamp(),
                idle_s=None if idle is None else idle.total_seconds(),
                created_ts=row.created_at.timestamp(),
                last_used_ts=None if row.last_used_at is None else row.last_used_at.timestamp(),
            )

    def changed_since(self, since: dt.datetime) -> list[str]:
        """API keys whose row changed at or after ``since`` (the cache poller's query)."""
        with self.db.read() as s:
            return list(s.execute(select(ApiKey.public_id).where(ApiKey.updated_at >= since)).scalars())

    def record_usage(self, usage: dict[str, tuple[dt.datetime, str | None]]) -> None:
        """Write batched last-used times. Does not bump updated_at: usage is not a key change."""
        if not usage:
            return
        with self.db.transaction() as s:
            for public_id, (when, ip) in usage.items():
                s.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.public_id == public_id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < when),
                    )
                    .values(last_used_at=when, last_used_ip=ip, idle_warned_at=None)
                )

    def sweep(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Mark keys past their expiry as expired (audited once), and warn about idle keys
        nearing their idle deadline. Verification enforces expiry on its own; this records it."""
        now = now or utcnow()
        expired, warned = [], 0
        warn_window = dt.timedelta(days=self.settings.idle_expiry_warning_days)
        with self.db.transaction() as s:
            for row in s.execute(select(ApiKey).where(ApiKey.status == "active").with_for_update()).scalars():
                info = key_info(row, self.settings.idle_expiry_days)
                if info.expires_at is not None and info.expires_at <= now:
                    row.status = "expired"
                    row.updated_at = now
                    row.version += 1
                    reason = "idle" if info.expires_at != info.restrictions.expires_at else "expires_at"
                    audit_key(s, EventType.KEY_EXPIRED, row, SYSTEM, {"reason": reason}, now)
                    expired.append(row.public_id)
                elif (
                    info.idle_expiry_applies
                    and info.expires_at is not None
                    and info.expires_at - now <= warn_window
                    and row.idle_warned_at is None
                ):
                    row.idle_warned_at = now
                    data = {"expires_at": info.expires_at.isoformat()}
                    audit_key(s, EventType.KEY_IDLE_WARNING, row, SYSTEM, data, now)
                    warned += 1
        self._notify(expired)
        return {"expired": len(expired), "warned": warned}
