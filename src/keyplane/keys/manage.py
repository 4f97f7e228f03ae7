"""Key management as a person does it in the console or through ``/v1/account``: KeyService's
operations with the account's 2FA rules in front of them. A thin façade: every rule a key obeys
is keys/rules.py, applied once by KeyService; this module only decides *when* a person's TOTP code
is spent, and turns it into the StepUp proof KeyService asks for.

- Creating a key needs 2FA enrolled and a fresh TOTP code. The input is drafted (every rule
  checked) *before* the code is spent, so a typo in a CIDR does not burn a code; a key exists only
  if the whole create succeeded (KeyService writes it in one transaction).
- A change that widens a key needs a fresh code; narrowing does not. So do rotating (it issues a new
  credential), re-enabling, and revoking every key.
- A revoked or expired key is refused before a code is spent: it cannot be changed, enabled or
  rotated (an expired key stays expired; rules.check_state).
- Revoking every key also ends every other console session of the account, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from keyplane.accounts.errors import TwoFactorRequired
from keyplane.accounts.identity import Identity
from keyplane.accounts.sessions import end_sessions
from keyplane.db import utcnow
from keyplane.keys import rules
from keyplane.keys.errors import InvalidRestriction, StepUpRequired
from keyplane.keys.rules import Actor, parse_expiry, parse_grace
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.service import KeyService

__all__ = ["KeyManager", "KeySpec", "parse_expiry", "parse_grace", "spec_changes"]


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


class KeyManager:
    def __init__(self, keys: KeyService, identity: Identity) -> None:
        self.keys = keys
        self.identity = identity

    def _require_2fa(self, user_id: int) -> None:
        if not self.identity.twofactor.enabled(user_id):
            raise TwoFactorRequired("turn on two-factor authentication before managing API keys")

    def create(self, user_id: int, spec: KeySpec, code: str, *, actor: Actor) -> IssuedKey:
        """Draft the key (every rule), then spend the TOTP code, then write it. Raises the first
        problem found."""
        self._require_2fa(user_id)
        restrictions = self.keys.build_restrictions(
            ips=spec.ips,
            symbols=spec.symbols,
            max_notional=spec.max_notional,
            daily_withdraw_cap=spec.daily_withdraw_cap,
            expires_at=spec.expires_at,
        )
        draft = self.keys.draft(
            user_id,
            scopes=spec.scopes,
            restrictions=restrictions,
            label=spec.label,
            key_type=spec.key_type,
            public_key=spec.public_key if spec.key_type == "ed25519" else None,
        )
        proof = self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.issue(draft, proof, actor=actor)

    def update(self, user_id: int, api_key: str, code: str, *, actor: Actor, **changes: Any) -> KeyInfo:
        """Apply ``changes`` (KeyService.update's keyword arguments; absent ones stay as they are).

        A widening change needs ``code``: without one it raises StepUpRequired (field ``totp``);
        a narrowing change never spends a code.
        """
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise InvalidRestriction(f"cannot change {sorted(unknown)!r}", field=sorted(unknown)[0])
        try:
            return self.keys.update(api_key, user_id=user_id, step_up=None, actor=actor, **changes)
        except StepUpRequired as e:
            if not (code or "").strip():
                e.field = "totp"
                raise
        proof = self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.update(api_key, user_id=user_id, step_up=proof, actor=actor, **changes)

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
        rules.check_rotation(self.keys.get(api_key, user_id), grace, public_key, utcnow())  # before spending a code
        proof = self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.rotate(
            api_key, user_id=user_id, grace=grace, public_key=public_key, step_up=proof, actor=actor
        )

    def disable(self, user_id: int, api_key: str, *, actor: Actor) -> KeyInfo:
        return self.keys.disable(api_key, user_id=user_id, actor=actor)

    def enable(self, user_id: int, api_key: str, code: str, *, actor: Actor) -> KeyInfo:
        rules.check_state(self.keys.get(api_key, user_id), "enabled", utcnow())  # 404 / 409 before spending a code
        proof = self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.enable(api_key, user_id=user_id, step_up=proof, actor=actor)

    def revoke(self, user_id: int, api_key: str, *, actor: Actor) -> KeyInfo:
        return self.keys.revoke(api_key, user_id=user_id, actor=actor)

    def revoke_all(
        self, user_id: int, code: str, *, confirmed: bool, actor: Actor, keep_session: str | None = None
    ) -> list[str]:
        """The panic button: needs an explicit confirmation and a fresh TOTP code (so that a
        stolen console session alone cannot lock the owner out of every bot at once). Every key is
        revoked and every console session but ``keep_session`` (the caller's) ends, together."""
        if not confirmed:
            raise InvalidRestriction("tick the box to confirm that every key is revoked", field="confirm")
        self.identity.verify_step_up(user_id, code, ip=actor.ip)
        return self.keys.revoke_all(user_id, actor=actor, also=lambda s: end_sessions(s, user_id, keep=keep_session))
