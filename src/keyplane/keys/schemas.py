"""What the key service returns: public views of keys. No secret material, ever, except in
:class:`IssuedKey`, which exists to show a new secret exactly once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from keyplane.keys.scopes import Restrictions, Scope, scopes_text


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    api_key: str
    user_id: int
    label: str
    key_type: str
    scopes: frozenset[Scope]
    restrictions: Restrictions
    status: str
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None  # the effective expiry: explicit, or idle-based
    idle_expiry_applies: bool
    rotated_at: dt.datetime | None
    previous_valid_until: dt.datetime | None
    last_used_at: dt.datetime | None
    last_used_ip: str | None
    revoked_at: dt.datetime | None

    @property
    def effective_status(self) -> str:
        if self.status == "active" and self.expires_at is not None and self.expires_at <= dt.datetime.now(dt.UTC):
            return "expired"
        return self.status

    def to_json(self) -> dict[str, Any]:
        return {
            "api_key": self.api_key,
            "label": self.label,
            "type": self.key_type,
            "scopes": scopes_text(self.scopes).split(",") if self.scopes else [],
            "status": self.effective_status,
            "ip_allowlist": [str(n) for n in self.restrictions.ip_allowlist],
            "symbols": list(self.restrictions.symbols),
            "max_notional": None if self.restrictions.max_notional is None else str(self.restrictions.max_notional),
            "daily_withdraw_cap": None
            if self.restrictions.daily_withdraw_cap is None
            else str(self.restrictions.daily_withdraw_cap),
            "expires_at": _iso(self.expires_at),
            "explicit_expires_at": _iso(self.restrictions.expires_at),
            "idle_expiry": self.idle_expiry_applies,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "rotated_at": _iso(self.rotated_at),
            "previous_secret_valid_until": _iso(self.previous_valid_until),
            "last_used_at": _iso(self.last_used_at),
            "last_used_ip": self.last_used_ip,
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key at the one moment its secret may be shown: right after create or rotate."""

    info: KeyInfo
    secret: str | None  # None for ed25519 keys: the user holds the private key

    def __repr__(self) -> str:
        return f"IssuedKey(api_key={self.info.api_key[:12]!r}…, secret=<hidden>)"

    def to_json(self) -> dict[str, Any]:
        out = {"api_key": self.info.api_key, "secret": self.secret}
        out.update({k: v for k, v in self.info.to_json().items() if k != "api_key"})
        return out
