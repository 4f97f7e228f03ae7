"""The key lifecycle: create, list, show, update, disable/enable, rotate, revoke, revoke-all.

:class:`KeyService` owns each transaction and writes the audit event inside it. After a commit it
tells its listeners which keys changed, so the in-process cache (and, across nodes, the Redis
broadcast) drops them at once.

Secrets: an hmac secret is generated here, encrypted under the newest master key with the API key
as associated data, and returned once in :class:`IssuedKey`. It is never logged or stored in clear.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from keyplane.accounts.models import User
from keyplane.audit.events import EventType
from keyplane.audit.service import record as audit
from keyplane.db import Database, utcnow
from keyplane.keys import format as keyformat
from keyplane.keys.errors import (
    InvalidRestriction,
    KeyNotFound,
    KeyStateError,
    StepUpRequired,
    UserNotFound,
    WithdrawNeedsIpAllowlist,
)
from keyplane.keys.master import MasterKeys
from keyplane.keys.models import ApiKey
from keyplane.keys.pubkeys import parse_ed25519_public_key
from keyplane.keys.record import Ed25519Verifier, HmacVerifier, KeyRecord, Verifier
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.scopes import (
    MIN_BOUND_PREFIX,
    Restrictions,
    Scope,
    idle_expiry_applies,
    parse_amount,
    parse_networks,
    parse_scopes,
    parse_symbols,
    scopes_text,
    usable_scopes,
    widening,
)
from keyplane.keys.secretbox import Keyring, UnknownMasterKey
from keyplane.settings import Settings

KeyType = Literal["hmac", "ed25519"]
ChangeListener = Callable[[Sequence[str]], None]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change, for the audit log: ``admin:cli``, ``user:12`` ..."""

    name: str
    ip: str | None = None


ADMIN_CLI = Actor("admin:cli")


def _restrictions_of(row: ApiKey) -> Restrictions:
    return Restrictions(
        ip_allowlist=parse_networks(row.ip_allowlist.split(",") if row.ip_allowlist else [], limit=10_000),
        symbols=tuple(s for s in row.symbols.split(",") if s),
        max_notional=Decimal(row.max_notional) if row.max_notional else None,
        daily_withdraw_cap=Decimal(row.daily_withdraw_cap) if row.daily_withdraw_cap else None,
        expires_at=row.expires_at,
    )


def _scopes_of(row: ApiKey) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in row.scopes.split(",") if s)


def _apply_restrictions(row: ApiKey, r: Restrictions) -> None:
    row.ip_allowlist = ",".join(str(n) for n in r.ip_allowlist)
    row.symbols = ",".join(r.symbols)
    row.max_notional = None if r.max_notional is None else str(r.max_notional)
    row.daily_withdraw_cap = None if r.daily_withdraw_cap is None else str(r.daily_withdraw_cap)
    row.expires_at = r.expires_at


class KeyService:
    def __init__(self, db: Database, settings: Settings, master: MasterKeys) -> None:
        self.db = db
        self.settings = settings
        self.master = master
        self.listeners: list[ChangeListener] = []

    # -- helpers ---------------------------------------------------------------------------------

    def _idle_expiry(self, scopes: Iterable[Scope], r: Restrictions) -> dt.timedelta | None:
        if not idle_expiry_applies(scopes, r):
            return None
        return dt.timedelta(days=self.settings.idle_expiry_days)

    def _info(self, row: ApiKey) -> KeyInfo:
        scopes, r = _scopes_of(row), _restrictions_of(row)
        idle = self._idle_expiry(scopes, r)
        expiry = r.expires_at
        if idle is not None:
            deadline = max(row.last_used_at or row.created_at, row.created_at) + idle
            expiry = deadline if expiry is None else min(expiry, deadline)
        return KeyInfo(
            api_key=row.public_id,
            user_id=row.user_id,
            label=row.label,
            key_type=row.key_type,
            scopes=scopes,
            restrictions=r,
            status=row.status,
            created_at=row.created_at,
            updated_at=row.updated_at,
            expires_at=expiry,
            idle_expiry_applies=idle is not None,
            rotated_at=row.rotated_at,
            previous_valid_until=row.previous_valid_until,
            last_used_at=row.last_used_at,
            last_used_ip=row.last_used_ip,
            revoked_at=row.revoked_at,
        )

    def _notify(self, public_ids: Sequence[str]) -> None:
        if not public_ids:
            return
        for listener in self.listeners:
            listener(public_ids)

    @staticmethod
    def validate(scopes: frozenset[Scope], r: Restrictions, now: dt.datetime) -> None:
        """The rules every key's settings obey, at creation and after every change.

        Raises InvalidRestriction, or WithdrawNeedsIpAllowlist when ``withdraw`` is asked for on a
        key that is not IP-bound (no allowlist, or an entry broader than MIN_BOUND_PREFIX): a
        too-broad list is refused with the entries named, rather than silently not counting.
        """
        if not scopes:
            raise InvalidRestriction("a key needs at least one scope", field="scopes")
        if Scope.WITHDRAW in scopes and not r.is_ip_bound:
            broad = r.too_broad()
            if not broad:
                raise WithdrawNeedsIpAllowlist()
            raise WithdrawNeedsIpAllowlist(
                "the withdraw scope needs an IP allowlist that binds the key to your own networks: "
                f"{', '.join(str(n) for n in broad)} "
                f"{'is' if len(broad) == 1 else 'are'} broader than /{MIN_BOUND_PREFIX[4]} (IPv4) "
                f"or /{MIN_BOUND_PREFIX[6]} (IPv6); list narrower networks or single addresses"
            )
        if r.expires_at is not None and r.expires_at <= now:
            raise InvalidRestriction("the expiry must be in the future", field="expires_at")

    @staticmethod
    def check_state(info: KeyInfo, action: str, now: dt.datetime | None = None) -> None:
        """Raise KeyStateError if a revoked or expired key is asked to be ``action`` (changed,
        enabled, rotated). An expired key stays expired, whether the sweep has recorded it yet or
        not: no change, enable or rotation brings it back. Its owner creates a new key."""
        now = now or utcnow()
        if info.status == "revoked":
            raise KeyStateError(f"this key is revoked and cannot be {action}; revocation is permanent")
        if info.status == "expired" or (info.expires_at is not None and info.expires_at <= now):
            raise KeyStateError(
                f"this key has expired and cannot be {action}: an expired key stays expired; create a new key"
            )

    @staticmethod
    def _row(session: Session, public_id: str, user_id: int | None, *, lock: bool = False) -> ApiKey:
        stmt = select(ApiKey).where(ApiKey.public_id == public_id)
        if user_id is not None:
            stmt = stmt.where(ApiKey.user_id == user_id)
        if lock:
            stmt = stmt.with_for_update()
        row = session.execute(stmt).scalar_one_or_none()
        if row is None:
            raise KeyNotFound(f"no key {keyformat.mask(public_id)} on this account")
        return row

    def build_restrictions(
        self,
        *,
        ips: Iterable[str] = (),
        symbols: Iterable[str] = (),
        max_notional: str | Decimal | None = None,
        daily_withdraw_cap: str | Decimal | None = None,
        expires_at: dt.datetime | None = None,
    ) -> Restrictions:
        """Parse user input into Restrictions, raising InvalidRestriction naming the bad field."""
        return Restrictions(
            ip_allowlist=parse_networks(ips, limit=self.settings.max_ip_allowlist),
            symbols=parse_symbols(symbols),
            max_notional=parse_amount(max_notional, "max_notional"),
            daily_withdraw_cap=parse_amount(daily_withdraw_cap, "daily_withdraw_cap"),
            expires_at=expires_at,
        )

    def user_id_for_email(self, email: str) -> int:
        with self.db.read() as s:
            uid = s.execute(select(User.id).where(User.email == email.strip().lower())).scalar_one_or_none()
        if uid is None:
            raise UserNotFound(f"no user {email.strip().lower()!r}")
        return uid

    # -- lifecycle -------------------------------------------------------------------------------

    def create(
        self,
        user_id: int,
        *,
        scopes: Iterable[str] | frozenset[Scope] = ("read",),
        restrictions: Restrictions | None = None,
        label: str = "",
        key_type: KeyType = "hmac",
        public_key: str | bytes | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> IssuedKey:
        """Create a key. Returns the key with its secret (hmac) for showing once.

        Raises InvalidRestriction (and subclasses) for bad input, UserNotFound for an unknown user.
        Nothing is written unless every check passes.
        """
        now = now or utcnow()
        scope_set = parse_scopes(scopes) if not isinstance(scopes, frozenset) else scopes
        r = restrictions or Restrictions()
        self.validate(scope_set, r, now)
        label = label.strip()
        if len(label) > 100:
            raise InvalidRestriction("a label is at most 100 characters", field="label")
        public_id = keyformat.new_api_key(self.settings.key_environment)
        secret: str | None = None
        row = ApiKey(
            public_id=public_id,
            user_id=user_id,
            label=label,
            key_type=key_type,
            scopes=scopes_text(scope_set),
            status="active",
            created_at=now,
            updated_at=now,
            version=1,
        )
        if key_type == "hmac":
            secret = keyformat.new_secret()
            row.secret_ciphertext = self.master.keyring.encrypt(secret.encode("ascii"), public_id.encode())
        elif key_type == "ed25519":
            if public_key is None:
                raise InvalidRestriction("an ed25519 key needs the user's public key (PEM)", field="public_key")
            row.public_key = base64.b64encode(parse_ed25519_public_key(public_key)).decode("ascii")
        else:
            raise InvalidRestriction(f"unknown key type {key_type!r}; choose hmac or ed25519", field="type")
        _apply_restrictions(row, r)
        with self.db.transaction() as s:
            if s.get(User, user_id) is None:
                raise UserNotFound(f"no user with id {user_id}")
            s.add(row)
            s.flush()
            audit(
                s,
                EventType.KEY_CREATED,
                actor=actor.name,
                ip=actor.ip,
                user_id=user_id,
                key_id=public_id,
                data={"type": key_type, "scopes": row.scopes, "restrictions": r.to_json(), "label": label},
                now=now,
            )
            info = self._info(row)
        return IssuedKey(info=info, secret=secret)

    def list_keys(self, user_id: int) -> list[KeyInfo]:
        with self.db.read() as s:
            rows = s.execute(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)).scalars()
            return [self._info(r) for r in rows]

    def get(self, public_id: str, user_id: int | None = None) -> KeyInfo:
        with self.db.read() as s:
            return self._info(self._row(s, public_id, user_id))

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
        step_up: bool = False,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> KeyInfo:
        """Change a key's scopes, restrictions or label. Arguments left UNSET stay as they are.

        A change that widens the key (a scope, IPs, a higher limit, a later expiry, a removed
        allowlist) raises StepUpRequired unless ``step_up`` says a fresh 2FA check passed. A
        revoked or expired key raises KeyStateError: no change revives it, not even one that
        would remove its idle expiry or move its expiry date.
        """
        now = now or utcnow()
        with self.db.transaction() as s:
            row = self._row(s, public_id, user_id, lock=True)
            self.check_state(self._info(row), "changed", now)
            old_scopes, old = _scopes_of(row), _restrictions_of(row)
            new_scopes = old_scopes if scopes is UNSET else parse_scopes(scopes)
            new = Restrictions(
                ip_allowlist=old.ip_allowlist
                if ips is UNSET
                else parse_networks(ips, limit=self.settings.max_ip_allowlist),
                symbols=old.symbols if symbols is UNSET else parse_symbols(symbols),
                max_notional=old.max_notional if max_notional is UNSET else parse_amount(max_notional, "max_notional"),
                daily_withdraw_cap=old.daily_withdraw_cap
                if daily_withdraw_cap is UNSET
                else parse_amount(daily_withdraw_cap, "daily_withdraw_cap"),
                expires_at=old.expires_at if expires_at is UNSET else expires_at,
            )
            self.validate(new_scopes, new, now)
            wider = widening(old_scopes, old, new_scopes, new)
            if wider and not step_up:
                raise StepUpRequired(wider.reasons)
            if label is not UNSET:
                text = str(label).strip()
                if len(text) > 100:
                    raise InvalidRestriction("a label is at most 100 characters", field="label")
                row.label = text
            row.scopes = scopes_text(new_scopes)
            _apply_restrictions(row, new)
            row.updated_at = now
            row.version += 1
            audit(
                s,
                EventType.KEY_UPDATED,
                actor=actor.name,
                ip=actor.ip,
                user_id=row.user_id,
                key_id=public_id,
                data={
                    "scopes": [scopes_text(old_scopes), row.scopes],
                    "restrictions": [old.to_json(), new.to_json()],
                    "widened": wider.reasons,
                },
                now=now,
            )
            info = self._info(row)
        self._notify([public_id])
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
    ) -> KeyInfo:
        now = now or utcnow()
        with self.db.transaction() as s:
            row = self._row(s, public_id, user_id, lock=True)
            if row.status == "revoked":
                if status == "revoked":
                    return self._info(row)  # revoking twice is a no-op
                raise KeyStateError("this key is revoked; revocation is permanent")
            if status == "active":
                self.check_state(self._info(row), "enabled", now)
            elif row.status == "expired":
                return self._info(row)  # disabling an expired key changes nothing: it stays expired
            row.status = status
            row.updated_at = now
            row.version += 1
            if status == "revoked":
                row.revoked_at = now
                row.previous_secret_ciphertext = None
                row.previous_public_key = None
                row.previous_valid_until = None
            audit(s, event, actor=actor.name, ip=actor.ip, user_id=row.user_id, key_id=public_id, now=now)
            info = self._info(row)
        self._notify([public_id])
        return info

    def disable(
        self,
        public_id: str,
        *,
        user_id: int | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> KeyInfo:
        return self._set_status(public_id, "disabled", EventType.KEY_DISABLED, user_id=user_id, actor=actor, now=now)

    def enable(
        self,
        public_id: str,
        *,
        user_id: int | None = None,
        step_up: bool,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> KeyInfo:
        """Re-enable a disabled key. Enabling widens what is usable, so the caller says, every
        time, that a fresh 2FA check passed (or that it is the operator): there is no default.
        Raises StepUpRequired, or KeyStateError for a revoked or expired key."""
        if not step_up:
            raise StepUpRequired(["re-enables a disabled key"])
        return self._set_status(public_id, "active", EventType.KEY_ENABLED, user_id=user_id, actor=actor, now=now)

    def revoke(
        self,
        public_id: str,
        *,
        user_id: int | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
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
                row.status = "revoked"
                row.revoked_at = now
                row.updated_at = now
                row.version += 1
                row.previous_secret_ciphertext = None
                row.previous_public_key = None
                row.previous_valid_until = None
            ids = [r.public_id for r in rows]
            audit(
                s,
                EventType.KEYS_REVOKED_ALL,
                actor=actor.name,
                ip=actor.ip,
                user_id=user_id,
                data={"count": len(ids), "keys": ids}
                if ended is None
                else {"count": len(ids), "keys": ids, "sessions_ended": ended},
                now=now,
            )
        self._notify(ids)
        return ids

    def revoke_leaked(
        self,
        public_id: str,
        found: Sequence[tuple[str, str]],
        *,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> bool:
        """Revoke a leaked key and record where it leaked, in one transaction.

        ``found`` holds (kind, where) for each place the credential was seen; each becomes a
        ``key:api_key:leaked`` event, even if the key was revoked meanwhile. Returns True if this
        call revoked the key. Either the revocation and all its evidence are written, or nothing is.
        """
        now = now or utcnow()
        with self.db.transaction() as s:
            row = self._row(s, public_id, None, lock=True)
            revoked = row.status != "revoked"
            if revoked:
                row.status = "revoked"
                row.revoked_at = now
                row.updated_at = now
                row.version += 1
                row.previous_secret_ciphertext = None
                row.previous_public_key = None
                row.previous_valid_until = None
                audit(
                    s,
                    EventType.KEY_REVOKED,
                    actor=actor.name,
                    ip=actor.ip,
                    user_id=row.user_id,
                    key_id=public_id,
                    data={"reason": "leaked"},
                    now=now,
                )
            for kind, where in found:
                audit(
                    s,
                    EventType.KEY_LEAKED,
                    actor=actor.name,
                    ip=actor.ip,
                    user_id=row.user_id,
                    key_id=public_id,
                    data={"where": where, "kind": kind},
                    now=now,
                )
        if revoked:
            self._notify([public_id])
        return revoked

    def rotate(
        self,
        public_id: str,
        *,
        grace: dt.timedelta,
        user_id: int | None = None,
        public_key: str | bytes | None = None,
        actor: Actor = ADMIN_CLI,
        now: dt.datetime | None = None,
    ) -> IssuedKey:
        """Give the key a new credential. The old one keeps working until now + grace.

        hmac: a new secret is generated and returned once. ed25519: ``public_key`` is the new public key.
        A second rotation inside a grace period ends the older credential's grace at once.
        """
        now = now or utcnow()
        if grace < dt.timedelta(0):
            raise InvalidRestriction("the grace period cannot be negative", field="grace")
        secret: str | None = None
        with self.db.transaction() as s:
            row = self._row(s, public_id, user_id, lock=True)
            self.check_state(self._info(row), "rotated", now)
            if row.status != "active":
                raise KeyStateError(f"only an active key can be rotated; this one is {row.status}")
            keep = grace > dt.timedelta(0)
            if row.key_type == "hmac":
                secret = keyformat.new_secret()
                row.previous_secret_ciphertext = row.secret_ciphertext if keep else None
                row.secret_ciphertext = self.master.keyring.encrypt(secret.encode("ascii"), public_id.encode())
            else:
                if public_key is None:
                    raise InvalidRestriction("rotating an ed25519 key needs the new public key", field="public_key")
                new_pub = base64.b64encode(parse_ed25519_public_key(public_key)).decode("ascii")
                row.previous_public_key = row.public_key if keep else None
                row.public_key = new_pub
            row.previous_valid_until = now + grace if keep else None
            row.rotated_at = now
            row.updated_at = now
            row.version += 1
            audit(
                s,
                EventType.KEY_ROTATED,
                actor=actor.name,
                ip=actor.ip,
                user_id=row.user_id,
                key_id=public_id,
                data={"grace_seconds": int(grace.total_seconds())},
                now=now,
            )
            info = self._info(row)
        self._notify([public_id])
        return IssuedKey(info=info, secret=secret)

    # -- for the verification pipeline -----------------------------------------------------------

    def open_secret(self, token: str, public_id: str) -> bytes:
        """Decrypt a stored secret (bound to its API key). For verification and leak matching only."""
        try:
            return self.master.keyring.decrypt(token, public_id.encode())
        except UnknownMasterKey:
            # Another process rotated the embedded keyfile; pick up the new key and retry once.
            if not self.master.reload():
                raise
            return self.master.keyring.decrypt(token, public_id.encode())

    def load_record(self, public_id: str, now: dt.datetime | None = None) -> KeyRecord | None:
        """The cacheable record for a key, with its verifiers built; None if there is no such key."""
        now = now or utcnow()
        with self.db.read() as s:
            row = s.execute(select(ApiKey).where(ApiKey.public_id == public_id)).scalar_one_or_none()
            if row is None:
                return None
            scopes, r = _scopes_of(row), _restrictions_of(row)
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
            idle = self._idle_expiry(scopes, r)
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
                created_at=row.created_at,
                last_used_at=row.last_used_at,
                idle_expiry=idle,
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
                info = self._info(row)
                if info.expires_at is not None and info.expires_at <= now:
                    row.status = "expired"
                    row.updated_at = now
                    row.version += 1
                    reason = "idle" if info.expires_at != info.restrictions.expires_at else "expires_at"
                    audit(
                        s,
                        EventType.KEY_EXPIRED,
                        actor="system",
                        user_id=row.user_id,
                        key_id=row.public_id,
                        data={"reason": reason},
                        now=now,
                    )
                    expired.append(row.public_id)
                elif (
                    info.idle_expiry_applies
                    and info.expires_at is not None
                    and info.expires_at - now <= warn_window
                    and row.idle_warned_at is None
                ):
                    row.idle_warned_at = now
                    audit(
                        s,
                        EventType.KEY_IDLE_WARNING,
                        actor="system",
                        user_id=row.user_id,
                        key_id=row.public_id,
                        data={"expires_at": info.expires_at.isoformat()},
                        now=now,
                    )
                    warned += 1
        self._notify(expired)
        return {"expired": len(expired), "warned": warned}

    def reencrypt_all(self, keyring: Keyring, actor: Actor = ADMIN_CLI) -> int:
        """Re-encrypt every stored secret under ``keyring``'s newest key, in one transaction."""
        count = 0
        with self.db.transaction() as s:
            rows = s.execute(
                select(ApiKey).where(
                    or_(ApiKey.secret_ciphertext.is_not(None), ApiKey.previous_secret_ciphertext.is_not(None))
                )
            ).scalars()
            for row in rows:
                aad = row.public_id.encode()
                for attr in ("secret_ciphertext", "previous_secret_ciphertext"):
                    token = getattr(row, attr)
                    if token:
                        plain = self.open_secret(token, row.public_id)
                        setattr(row, attr, keyring.encrypt(plain, aad))
                        count += 1
            audit(
                s,
                EventType.MASTER_KEY_ROTATED,
                actor=actor.name,
                ip=actor.ip,
                data={"reencrypted": count, "newest_key_id": keyring.newest_id},
            )
        return count
