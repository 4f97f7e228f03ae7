"""Errors of the key lifecycle.

KeyError_ (KeyplaneError)
├── KeyNotFound            no such key for this account
├── InvalidRestriction     a scope, CIDR, symbol, amount or duration that does not parse
├── WithdrawNeedsIpAllowlist
├── InvalidPublicKey       an uploaded PEM that is not an Ed25519 public key
├── KeyStateError          e.g. enabling a revoked key
└── UserNotFound
"""

from __future__ import annotations

from keyplane.accounts.errors import StepUpRequired  # the one owner of step_up_required
from keyplane.errors import InvalidInput, KeyplaneError, NotFound

__all__ = ["StepUpRequired"]  # raised by key changes that widen; defined in accounts/errors.py


class KeyError_(KeyplaneError):
    code = "key_error"


class KeyNotFound(KeyError_, NotFound):
    code = "key_not_found"
    status = 404


class UserNotFound(KeyError_, NotFound):
    code = "user_not_found"
    status = 404


class InvalidRestriction(KeyError_, InvalidInput):
    code = "invalid_restriction"
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        InvalidInput.__init__(self, message, field)


class WithdrawNeedsIpAllowlist(InvalidRestriction):
    code = "withdraw_needs_ip_allowlist"

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or "the withdraw scope needs an IP allowlist: add at least one IP or CIDR", field="ips"
        )


class InvalidPublicKey(InvalidRestriction):
    code = "invalid_public_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="public_key")


class KeyStateError(KeyError_):
    code = "key_state"
    status = 409
