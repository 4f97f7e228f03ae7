"""Errors of accounts.

AccountError (KeyplaneError)
├── EmailTaken
├── InvalidEmail
└── WeakPassword
"""

from __future__ import annotations

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
