"""Errors of accounts, sign-in, sessions and 2FA.

AccountError (KeyplaneError)
├── EmailTaken               sign-up with an email that has an account
├── InvalidEmail
├── WeakPassword             too short, or on the common-password list
├── InvalidCredentials       wrong email or password (one message for both)
├── Throttled                too many attempts; carries Retry-After
├── LoginRequired            no session cookie, or an unknown one
│   └── SessionExpired       the session passed its idle or absolute limit
├── CsrfFailed               a state-changing request without the session's CSRF token
├── SignedKeyRefused         an API-key-signed request to an account endpoint
├── StepUpRequired           a widening without a fresh StepUp proof of the same user (the one
│                            owner of ``step_up_required``; keys/ and exchange/ raise it too)
└── TwoFactorError
    ├── TotpInvalid          a wrong, malformed or reused code
    ├── TwoFactorRequired    the operation needs 2FA enrolled first
    └── AlreadyEnrolled
"""

from __future__ import annotations

from collections.abc import Sequence

from keyplane.errors import Conflict, InvalidInput, KeyplaneError


class AccountError(KeyplaneError):
    code = "account_error"


class EmailTaken(AccountError, Conflict):
    code = "email_taken"
    status = 409

    def __init__(self, email: str) -> None:
        super().__init__(f"an account with {email!r} already exists")
        self.field = "email"


class InvalidEmail(AccountError, InvalidInput):
    code = "invalid_email"

    def __init__(self, message: str) -> None:
        InvalidInput.__init__(self, message, "email")


class WeakPassword(AccountError, InvalidInput):
    code = "weak_password"

    def __init__(self, message: str) -> None:
        InvalidInput.__init__(self, message, "password")


class InvalidCredentials(AccountError):
    code = "invalid_credentials"
    status = 401

    def __init__(self, message: str = "wrong email or password") -> None:
        super().__init__(message)
        self.field = "password"


class Throttled(AccountError):
    code = "too_many_attempts"
    status = 429
    binance_code = -1003

    def __init__(self, what: str, retry_after_s: int, field: str | None = None) -> None:
        super().__init__(f"too many {what} attempts; try again in {retry_after_s} seconds")
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}
        self.field = field


class LoginRequired(AccountError):
    code = "login_required"
    status = 401

    def __init__(self, message: str = "log in first") -> None:
        super().__init__(message)


class SessionExpired(LoginRequired):
    code = "session_expired"

    def __init__(self) -> None:
        super().__init__("your session expired; log in again")


class CsrfFailed(AccountError):
    code = "csrf_failed"
    status = 403

    def __init__(self) -> None:
        super().__init__("the form's security token is missing or stale; reload the page and try again")
        self.field = "csrf_token"


class SignedKeyRefused(AccountError):
    code = "api_key_not_allowed"
    status = 403

    def __init__(self) -> None:
        super().__init__("account management needs a console session; an API key can never manage keys")


class StepUpRequired(AccountError):
    """The change widens what a key or the account can do, and it came without a fresh StepUp
    proof of the account's owner (accounts/stepup.py). ``reasons`` say what widens."""

    code = "step_up_required"
    status = 403

    def __init__(self, reasons: Sequence[str] = (), message: str = "") -> None:
        self.reasons = list(reasons)
        because = " because it " + "; ".join(self.reasons) if self.reasons else ""
        super().__init__(message or "this change needs a fresh TOTP code" + because)
        self.field: str | None = None


class TwoFactorError(AccountError):
    code = "two_factor_error"


class TotpInvalid(TwoFactorError, InvalidInput):
    code = "totp_invalid"
    status = 400

    def __init__(self, message: str = "that code is wrong or was already used", field: str = "totp") -> None:
        InvalidInput.__init__(self, message, field)


class TwoFactorRequired(TwoFactorError):
    code = "two_factor_required"
    status = 403

    def __init__(self, message: str = "turn on two-factor authentication first") -> None:
        super().__init__(message)
        self.field = "totp"


class AlreadyEnrolled(TwoFactorError, Conflict):
    code = "two_factor_enrolled"
    status = 409

    def __init__(self) -> None:
        super().__init__("two-factor authentication is already on for this account")
