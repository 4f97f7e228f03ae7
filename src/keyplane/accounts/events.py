"""Audit event types of accounts, ``domain:object:verb`` (written with ``keyplane.audit.service.record``)."""

from __future__ import annotations

from enum import StrEnum


class AccountEvent(StrEnum):
    LOGIN_SUCCEEDED = "account:login:succeeded"
    LOGIN_FAILED = "account:login:failed"
    LOGIN_THROTTLED = "account:login:throttled"
    LOGGED_OUT = "account:session:ended"
    TOTP_ENROLLED = "account:totp:enrolled"
    TOTP_FAILED = "account:totp:failed"
    RECOVERY_CODE_USED = "account:recovery_code:used"
    RECOVERY_CODES_REGENERATED = "account:recovery_code:regenerated"
