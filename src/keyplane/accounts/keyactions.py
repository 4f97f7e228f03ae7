"""Key management as a person does it in the console or through ``/v1/account``: every key
operation of :class:`KeyService`, with the account's 2FA rules in front of it.

- Creating a key needs 2FA enrolled and a fresh TOTP code. The input is checked *before* the code is
  spent, so a typo in a CIDR does not burn a code; a key exists only if the whole create succeeded
  (KeyService writes it in one transaction).
- A change that widens a key needs a fresh code; narrowing does not. So do rotating (it issues a new
  credential), re-enabling, and revoking every key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keyplane.accounts.errors import TwoFactorRequired
from keyplane.accounts.identity import Identity
from keyplane.keys.errors import InvalidRestriction, StepUpRequired, WithdrawNeedsIpAllowlist
from keyplane.keys.pubkeys import parse_ed25519_public_key
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.scopes import Scope, parse_duration, parse_scopes
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
    """``2027-01-31`` (end of that day, UTC), an ISO timestamp, or a duration such as ``30d``."""
    value = (text or "").strip()
    if not value:
        return None
    try:
        if len(value) == 10 and value[4] == "-":
            day = dt.date.fromisoformat(value)
            return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
        if "T" in value or ":" in value:
            when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise InvalidRestriction(f"{value!r} is not a date such as 2027-01-31", field="expires_at") from e
    try:
        return (now or dt.datetime.now(dt.UTC)) + parse_duration(value)
    except InvalidRestriction as e:
        raise InvalidRestriction(f"{value!r} is not a date such as 2027-01-31", field="expires_at") from e


def parse_grace(text: str | None, default_s: int) -> dt.timedelta:
    value = (text or "").strip()
    if not value:
        return dt.timedelta(seconds=default_s)
    try:
        return parse_duration(value)
    except InvalidRestriction as e:
        raise InvalidRestriction(f"{value!r} is not a duration such as 24h or 0", field="grace") from e


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
        if not scopes:
            raise InvalidRestriction("a key needs at least one scope", field="scopes")
        restrictions = self.keys.build_restrictions(
            ips=spec.ips,
            symbols=spec.symbols,
            max_notional=spec.max_notional,
            daily_withdraw_cap=spec.daily_withdraw_cap,
            expires_at=spec.expires_at,
        )
        if Scope.WITHDRAW in scopes and not restrictions.ip_allowlist:
            raise WithdrawNeedsIpAllowlist()
        if spec.key_type not in ("hmac", "ed25519"):
            raise InvalidRestriction(f"unknown key type {spec.key_type!r}; choose hmac or ed25519", field="key_type")
        if spec.key_type == "ed25519":
            if not (spec.public_key or "").strip():
                raise InvalidRestriction("paste your Ed25519 public key (PEM)", field="public_key")
            parse_ed25519_public_key(spec.public_key or "")
        if len(spec.label.strip()) > 100:
            raise InvalidRestriction("a label is at most 100 characters", field="label")
        if restrictions.expires_at is not None and restrictions.expires_at <= dt.datetime.now(dt.UTC):
            raise InvalidRestriction("the expiry must be in the future", field="expires_at")
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
        self.keys.get(api_key, user_id)  # 404 before spending a code
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.enable(api_key, user_id=user_id, step_up=True, actor=actor)

    def revoke(self, user_id: int, api_key: str, *, actor: Actor) -> KeyInfo:
        return self.keys.revoke(api_key, user_id=user_id, actor=actor)

    def revoke_all(self, user_id: int, code: str, *, confirmed: bool, actor: Actor) -> list[str]:
        """The panic button: needs an explicit confirmation and a fresh TOTP code."""
        if not confirmed:
            raise InvalidRestriction("tick the box to confirm that every key is revoked", field="confirm")
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.revoke_all(user_id, actor=actor)
