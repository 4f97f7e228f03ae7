"""The key lifecycle: create, list, show, update, disable/enable, rotate, revoke, revoke-all.

:class:`KeyService` owns each transaction and writes the audit event inside it. After a commit it
tells its listeners which keys changed, so the in-process cache (and, across nodes, the Redis
broadcast) drops them at once. The rules a key's settings obey are keys/rules.py; what the
verifier and the background tasks read and write is keys/records.py (``self.records``).

Every change that widens what an account's programs can do (a new key, a new credential, a wider
key, enabling a disabled key) takes a StepUp proof of the key's owner (accounts/stepup.py) and
raises StepUpRequired without a fresh one; narrowing never asks. The audit event says how the
proof was made (``totp``, ``recovery`` or ``operator``).

Secrets: an hmac secret is generated here, encrypted under the active master key with the API key
as associated data, and returned once in :class:`IssuedKey`. It is never logged or stored in clear.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyplane.accounts.models import User
from keyplane.accounts.stepup import StepUp, require_step_up
from keyplane.audit.events import EventType
from keyplane.audit.service import record as audit
from keyplane.crypto.secretbox import api_secret_aad
from keyplane.db import Database, utcnow
from keyplane.keys import format as keyformat
from keyplane.keys import rules
from keyplane.keys.errors import KeyNotFound, KeyStateError, UserNotFound
from keyplane.keys.models import ApiKey
from keyplane.keys.records import KeyRecords, audit_key
from keyplane.keys.rules import ADMIN_CLI, UNSET, Actor, KeyDraft, KeyType
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.scopes import (
    Restrictions,
    Scope,
    parse_scopes,
    scopes_text,
    widening,
)
from keyplane.masterkeys import MasterKeys
from keyplane.settings import Settings

__all__ = ["ADMIN_CLI", "UNSET", "Actor", "KeyService", "KeyType"]

ChangeListener = Callable[[Sequence[str]], None]


class KeyService:
    def __init__(self, db: Database, settings: Settings, master: MasterKeys) -> None:
        self.db = db
        self.settings = settings
        self.master = master
        self.listeners: list[ChangeListener] = []
        self.records = KeyRecords(db, settings, master, self.notify)

    def _info(self, row: ApiKey) -> KeyInfo:
        return rules.key_info(row, self.settings.idle_expiry_days)

    def notify(self, public_ids: Sequence[str]) -> None:
        if not public_ids:
            return
        for listener in self.listeners:
            listener(public_ids)

    @staticmethod
    def row(session: Session, public_id: str, user_id: int | None, *, lock: bool = False) -> ApiKey:
        stmt = select(ApiKey).where(ApiKey.public_id == public_id)
        if user_id is not None:
            stmt = stmt.where(ApiKey.user_id == user_id)
        if lock:
            stmt = stmt.with_for_update()
        row = session.execute(stmt).scalar_one_or_none()
        if row is None:
            raise KeyNotFound(f"no key {keyformat.mask(public_id)} on this account")
        return row

    def build_restrictions(self, **fields: Any) -> Restrictions:
        """Parse user input (rules.build_restrictions's fields: ips, symbols, max_notional,
        daily_withdraw_cap, expires_at) into Restrictions; raises InvalidRestriction naming the field."""
        return rules.build_restrictions(max_ips=self.settings.max_ip_allowlist, **fields)

    def user_id_for_email(self, email: str) -> int:
        with self.db.read() as s:
            uid = s.execute(select(User.id).where(User.email == email.strip().lower())).scalar_one_or_none()
        if uid is None:
            raise UserNotFound(f"no user {email.strip().lower()!r}")
        return uid

    def draft(self, user_id: int, *, now: dt.datetime | None = None, **fields: Any) -> KeyDraft:
        """A new key's settings (rules.draft's fields: scopes, restrictions, label, key_type,
        public_key) with every rule checked, nothing written yet."""
        fields.setdefault("scopes", ("read",))
        fields["restrictions"] = fields.get("restrictions") or Restrictions()
        fields.setdefault("label", "")
        fields.setdefault("key_type", "hmac")
        fields.setdefault("public_key", None)
        return rules.draft(user_id, now=now or utcnow(), **fields)

    def create(
        self,
        user_id: int,
        *,
        step_up: StepUp | None,
        scopes: Iterable[str] | frozenset[Scope] = ("read",),
        restrictions: Restrictions | None = None,
        label: str = "",
        key_type: KeyType = "hmac",
        public_key: str | bytes | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> IssuedKey:
        """Create a key. Returns the key with its secret (hmac) for showing once.

        Raises InvalidRestriction (and subclasses) for bad input, StepUpRequired without a fresh
        proof of ``user_id``, UserNotFound for an unknown user. Nothing is written unless every
        check passes.
        """
        fields = {"scopes": scopes, "restrictions": restrictions, "label": label, "public_key": public_key}
        return self.issue(self.draft(user_id, key_type=key_type, now=now, **fields), step_up, actor=actor, now=now)

    def issue(
        self, draft: KeyDraft, step_up: StepUp | None, *, actor: Actor, now: dt.datetime | None = None
    ) -> IssuedKey:
        """Write a drafted key. A new key is a new way into the account: it needs a fresh StepUp."""
        proof = require_step_up(step_up, draft.user_id, reasons=["creates a key"])
        now = now or utcnow()
        public_id = keyformat.new_api_key(self.settings.key_environment)
        secret = keyformat.new_secret() if draft.key_type == "hmac" else None
        row = ApiKey(
            public_id=public_id,
            user_id=draft.user_id,
            label=draft.label,
            key_type=draft.key_type,
            scopes=scopes_text(draft.scopes),
            status="active",
            created_at=now,
            updated_at=now,
            version=1,
        )
        if draft.public_key is not None:
            row.public_key = rules.encode_public_key(draft.public_key)
        rules.apply_restrictions(row, draft.restrictions)
        with self.db.transaction() as s:
            if s.get(User, draft.user_id) is None:
                raise UserNotFound(f"no user with id {draft.user_id}")
            if secret is not None:
                row.secret_ciphertext = self.master.encrypt(s, secret.encode("ascii"), api_secret_aad(public_id))
            s.add(row)
            s.flush()
            data = {"type": draft.key_type, "scopes": row.scopes, "restrictions": draft.restrictions.to_json()}
            audit_key(s, EventType.KEY_CREATED, row, actor, {**data, "label": draft.label, "step_up": proof.how}, now)
            info = self._info(row)
        return IssuedKey(info=info, secret=secret)

    def list_keys(self, user_id: int) -> list[KeyInfo]:
        with self.db.read() as s:
            rows = s.execute(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)).scalars()
            return [self._info(r) for r in rows]

    def get(self, public_id: str, user_id: int | None = None) -> KeyInfo:
        with self.db.read() as s:
            return self._info(self.row(s, public_id, user_id))

    def update(
        self,
        public_id: str,
        *,
        user_id: int | None = None,
        scopes: Iterable[str] | Any = UNSET,
        ips: Iterable[str] | Any = UNSET,
        symbols: Iterable[str] | Any = UNSET,
        max_notional: str | Decimal | Any | None = UNSET,
        daily_withdraw_cap: str | Decimal | Any | None = UNSET,
        expires_at: dt.datetime | Any | None = UNSET,
        label: str | Any = UNSET,
        step_up: StepUp | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> KeyInfo:
        """Change a key's scopes, restrictions or label. Arguments left UNSET stay as they are.

        A change that widens the key (a scope, IPs, a higher limit, a later expiry, a removed
        allowlist) raises StepUpRequired, naming what widens, unless ``step_up`` is a fresh proof
        of the key's owner. A revoked or expired key raises KeyStateError: no change revives it,
        not even one that would remove its idle expiry or move its expiry date.
        """
        now = now or utcnow()
        with self.db.transaction() as s:
            row = self.row(s, public_id, user_id, lock=True)
            rules.check_state(self._info(row), "changed", now)
            old_scopes, old = rules.scopes_of(row), rules.restrictions_of(row)
            new_scopes = old_scopes if scopes is UNSET else parse_scopes(scopes)
            new = rules.changed_restrictions(
                old,
                ips=ips,
                symbols=symbols,
                max_notional=max_notional,
                daily_withdraw_cap=daily_withdraw_cap,
                expires_at=expires_at,
                max_ips=self.settings.max_ip_allowlist,
            )
            rules.validate(new_scopes, new, now)
            wider = widening(old_scopes, old, new_scopes, new)
            how = require_step_up(step_up, row.user_id, reasons=wider.reasons).how if wider else None
            if label is not UNSET:
                row.label = rules.check_label(str(label))
            row.scopes = scopes_text(new_scopes)
            rules.apply_restrictions(row, new)
            row.updated_at = now
            row.version += 1
            data: dict[str, Any] = {
                "scopes": [scopes_text(old_scopes), row.scopes],
                "restrictions": [old.to_json(), new.to_json()],
                "widened": wider.reasons,
            }
            if how is not None:
                data["step_up"] = how
            audit_key(s, EventType.KEY_UPDATED, row, actor, data, now)
            info = self._info(row)
        self.notify([public_id])
        return info

    def _set_status(
        self,
        public_id: str,
        status: str,
        event: EventType,
        *,
        user_id: int | None,
        actor: Actor,
        now: dt.datetime | None,
        step_up: StepUp | None = None,
    ) -> KeyInfo:
        now = now or utcnow()
        with self.db.transaction() as s:
            row = self.row(s, public_id, user_id, lock=True)
            if row.status == "revoked":
                if status == "revoked":
                    return self._info(row)  # revoking twice is a no-op
                raise KeyStateError("this key is revoked; revocation is permanent")
            data: dict[str, Any] | None = None
            if status == "active":
                rules.check_state(self._info(row), "enabled", now)
                data = {"step_up": require_step_up(step_up, row.user_id, reasons=["re-enables a disabled key"]).how}
            elif row.status == "expired":
                return self._info(row)  # disabling an expired key changes nothing: it stays expired
            if status == "revoked":
                rules.mark_revoked(row, now)
            else:
                row.status = status
                row.updated_at = now
                row.version += 1
            audit_key(s, event, row, actor, data, now)
            info = self._info(row)
        self.notify([public_id])
        return info

    def disable(
        self, public_id: str, *, user_id: int | None = None, actor: Actor = ADMIN_CLI, now: dt.datetime | None = None
    ) -> KeyInfo:
        return self._set_status(public_id, "disabled", EventType.KEY_DISABLED, user_id=user_id, actor=actor, now=now)

    def enable(
        self,
        public_id: str,
        *,
        user_id: int | None = None,
        step_up: StepUp | None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> KeyInfo:
        """Re-enable a disabled key. Enabling widens what is usable, so it takes a fresh StepUp
        of the key's owner (or the operator's). Raises StepUpRequired, or KeyStateError for a
        revoked or expired key."""
        return self._set_status(
            public_id, "active", EventType.KEY_ENABLED, user_id=user_id, actor=actor, now=now, step_up=step_up
        )

    def revoke(
        self, public_id: str, *, user_id: int | None = None, actor: Actor = ADMIN_CLI, now: dt.datetime | None = None
    ) -> KeyInfo:
        return self._set_status(public_id, "revoked", EventType.KEY_REVOKED, user_id=user_id, actor=actor, now=now)

    def revoke_all(
        self,
        user_id: int,
        *,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
        also: Callable[[Session], int] | None = None,
    ) -> list[str]:
        """Revoke every key of the account that is not revoked yet; returns their API keys.

        ``also`` runs in the same transaction and returns a count for the audit event: the console
        ends the account's other sessions with it, so the panic button is all or nothing.
        """
        now = now or utcnow()
        with self.db.transaction() as s:
            ended = None if also is None else also(s)
            rows = list(
                s.execute(
                    select(ApiKey).where(ApiKey.user_id == user_id, ApiKey.status != "revoked").with_for_update()
                ).scalars()
            )
            for row in rows:
                rules.mark_revoked(row, now)
            ids = [r.public_id for r in rows]
            data: dict[str, Any] = {"count": len(ids), "keys": ids}
            if ended is not None:
                data["sessions_ended"] = ended
            audit(s, EventType.KEYS_REVOKED_ALL, actor=actor.name, ip=actor.ip, user_id=user_id, data=data, now=now)
        self.notify(ids)
        return ids

    def rotate(
        self,
        public_id: str,
        *,
        grace: dt.timedelta,
        step_up: StepUp | None,
        user_id: int | None = None,
        public_key: str | bytes | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> IssuedKey:
        """Give the key a new credential, behind a fresh StepUp of its owner (a new credential is
        a new way in). The old one keeps working until now + grace.

        hmac: a new secret is generated and returned once. ed25519: ``public_key`` is the new public key.
        A second rotation inside a grace period ends the older credential's grace at once.
        """
        now = now or utcnow()
        secret: str | None = None
        with self.db.transaction() as s:
            row = self.row(s, public_id, user_id, lock=True)
            new_public = rules.check_rotation(self._info(row), grace, public_key, now)
            proof = require_step_up(step_up, row.user_id, reasons=["issues a new credential"])
            keep = grace > dt.timedelta(0)
            if new_public is None:
                secret = keyformat.new_secret()
                row.previous_secret_ciphertext = row.secret_ciphertext if keep else None
                row.secret_ciphertext = self.master.encrypt(s, secret.encode("ascii"), api_secret_aad(public_id))
            else:
                row.previous_public_key = row.public_key if keep else None
                row.public_key = rules.encode_public_key(new_public)
            row.previous_valid_until = now + grace if keep else None
            row.rotated_at = now
            row.updated_at = now
            row.version += 1
            data = {"grace_seconds": int(grace.total_seconds()), "step_up": proof.how}
            audit_key(s, EventType.KEY_ROTATED, row, actor, data, now)
            info = self._info(row)
        self.notify([public_id])
        return IssuedKey(info=info, secret=secret)
