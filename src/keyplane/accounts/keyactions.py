"""Key management as a person does it in the console or through ``/v1/account``: every key
operation of :class:`KeyService`, with the account's 2FA rules in front of it.

- Creating a key needs 2FA enrolled and a fresh TOTP code. The input is checked *before* the code is
  spent, so a typo in a CIDR does not burn a code; a key exists only if the whole create succeeded
  (KeyService writes it in one transaction).
- A change that widens a key needs a fresh code; narrowing does not. So do rotating (it issues a new
  credential), re-enabling, and revoking every key.
- A revoked or expired key is refused before a code is spent: it cannot be changed, enabled or
  rotated (an expired key stays expired; KeyService.check_state).
- Revoking every key also ends every other console session of the account, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keyplane import parsing
from keyplane.accounts.errors import TwoFactorRequired
from keyplane.accounts.identity import Identity
from keyplane.accounts.sessions import end_sessions
from keyplane.keys.errors import InvalidRestriction, StepUpRequired
from keyplane.keys.pubkeys import parse_ed25519_public_key
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.scopes import parse_scopes
from keyplane.keys.service import Actor, KeyService, KeyType


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A key's settings as a person entered them (strings, not yet parsed)."""

    label: str = ""
    scopes: Sequence[str] = ("read",)
    ips: Sequence[str] = ()
    symbols: Sequence[str] = ()
    max_notional: str | None = None
    daily_withdraw_cap: str | None = None
    expires_at: dt.datetime | None = None
    key_type: str = "hmac"
    public_key: str | None = None

    def __repr__(self) -> str:
        return f"KeySpec(label={self.label!r}, scopes={list(self.scopes)!r}, type={self.key_type!r})"


_CHANGEABLE = frozenset({"scopes", "ips", "symbols", "max_notional", "daily_withdraw_cap", "expires_at", "label"})


def spec_changes(spec: KeySpec) -> dict[str, Any]:
    """Every setting of ``spec`` as KeyService.update arguments (a full replacement)."""
    return {
        "scopes": list(spec.scopes),
        "ips": list(spec.ips),
        "symbols": list(spec.symbols),
        "max_notional": spec.max_notional or None,
        "daily_withdraw_cap": spec.daily_withdraw_cap or None,
        "expires_at": spec.expires_at,
        "label": spec.label,
    }


def parse_expiry(text: str | None, *, now: dt.datetime | None = None) -> dt.datetime | None:
    """``2027-01-31`` (end of that day, UTC), an ISO timestamp, or a duration such as ``30d``
    (at most 100 years). Raises InvalidRestriction (field ``expires_at``)."""
    value = (text or "").strip()
    if not value:
        return None
    try:
        if value[:1].isascii() and value[:1].isdigit() and ("-" in value[:5] or ":" in value or "T" in value):
            return parsing.moment(value, "expires_at")
        return (now or dt.datetime.now(dt.UTC)) + parsing.duration(value, "expires_at")
    except parsing.ParseError as e:
        raise InvalidRestriction(
            f"{e.message}; an expiry is a date such as 2027-01-31, a timestamp such as 2027-01-31T12:00:00Z "
            "or a duration such as 30d",
            field="expires_at",
        ) from e


def parse_grace(text: str | None, default_s: int) -> dt.timedelta:
    """How long a rotated-out credential keeps working: ``24h``, ``0``... at most 100 years."""
    value = (text or "").strip()
    if not value:
        return dt.timedelta(seconds=default_s)
    try:
        return parsing.duration(value, "grace")
    except parsing.ParseError as e:
        raise InvalidRestriction(f"{e.message}; a grace period is a duration such as 24h or 0", field="grace") from e


class KeyActions:
    def __init__(self, keys: KeyService, identity: Identity) -> None:
        self.keys = keys
        self.identity = identity

    def _require_2fa(self, user_id: int) -> None:
        if not self.identity.twofactor.enabled(user_id):
            raise TwoFactorRequired("turn on two-factor authentication before managing API keys")

    def create(self, user_id: int, spec: KeySpec, code: str, *, actor: Actor) -> IssuedKey:
        """Check the input, then the TOTP code, then create the key. Raises the first problem found."""
        self._require_2fa(user_id)
        scopes = parse_scopes(spec.scopes)
        restrictions = self.keys.build_restrictions(
            ips=spec.ips,
            symbols=spec.symbols,
            max_notional=spec.max_notional,
            daily_withdraw_cap=spec.daily_withdraw_cap,
            expires_at=spec.expires_at,
        )
        # The same rules KeyService.create applies (scopes, the IP binding for withdraw, expiry),
        # checked here too so that bad input does not spend a code.
        self.keys.validate(scopes, restrictions, dt.datetime.now(dt.UTC))
        if spec.key_type not in ("hmac", "ed25519"):
            raise InvalidRestriction(f"unknown key type {spec.key_type!r}; choose hmac or ed25519", field="key_type")
        if spec.key_type == "ed25519":
            if not (spec.public_key or "").strip():
                raise InvalidRestriction("paste your Ed25519 public key (PEM)", field="public_key")
            parse_ed25519_public_key(spec.public_key or "")
        if len(spec.label.strip()) > 100:
            raise InvalidRestriction("a label is at most 100 characters", field="label")
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        key_type: KeyType = "ed25519" if spec.key_type == "ed25519" else "hmac"
        return self.keys.create(
            user_id,
            scopes=scopes,
            restrictions=restrictions,
            label=spec.label,
            key_type=key_type,
            public_key=spec.public_key if key_type == "ed25519" else None,
            actor=actor,
        )

    def update(self, user_id: int, api_key: str, code: str, *, actor: Actor, **changes: Any) -> KeyInfo:
        """Apply ``changes`` (KeyService.update's keyword arguments; absent ones stay as they are).

        A widening change needs ``code``: without one it raises StepUpRequired (field ``totp``);
        a narrowing change never spends a code.
        """
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise InvalidRestriction(f"cannot change {sorted(unknown)!r}", field=sorted(unknown)[0])
        try:
            return self.keys.update(api_key, user_id=user_id, step_up=False, actor=actor, **changes)
        except StepUpRequired as e:
            if not (code or "").strip():
                e.field = "totp"  # type: ignore[attr-defined]
                raise
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.update(api_key, user_id=user_id, step_up=True, actor=actor, **changes)

    def rotate(
        self,
        user_id: int,
        api_key: str,
        code: str,
        *,
        grace: dt.timedelta,
        public_key: str | None = None,
        actor: Actor,
    ) -> IssuedKey:
        info = self.keys.get(api_key, user_id)
        self.keys.check_state(info, "rotated")  # before spending a code
        if info.key_type == "ed25519":
            if not (public_key or "").strip():
                raise InvalidRestriction("paste the new Ed25519 public key (PEM)", field="public_key")
            parse_ed25519_public_key(public_key or "")
        if grace < dt.timedelta(0):
            raise InvalidRestriction("the grace period cannot be negative", field="grace")
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.rotate(api_key, user_id=user_id, grace=grace, public_key=public_key, actor=actor)

    def disable(self, user_id: int, api_key: str, *, actor: Actor) -> KeyInfo:
        return self.keys.disable(api_key, user_id=user_id, actor=actor)

    def enable(self, user_id: int, api_key: str, code: str, *, actor: Actor) -> KeyInfo:
        self.keys.check_state(self.keys.get(api_key, user_id), "enabled")  # 404 / 409 before spending a code
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.enable(api_key, user_id=user_id, step_up=True, actor=actor)

    def revoke(self, user_id: int, api_key: str, *, actor: Actor) -> KeyInfo:
        return self.keys.revoke(api_key, user_id=user_id, actor=actor)

    def revoke_all(
        self, user_id: int, code: str, *, confirmed: bool, actor: Actor, keep_session: str | None = None
    ) -> list[str]:
        """The panic button: needs an explicit confirmation and a fresh TOTP code. Every key is
        revoked and every console session but ``keep_session`` (the caller's) ends, together."""
        if not confirmed:
            raise InvalidRestriction("tick the box to confirm that every key is revoked", field="confirm")
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.revoke_all(user_id, actor=actor, also=lambda s: end_sessions(s, user_id, keep=keep_session))
