"""Audit event types, ``domain:object:verb``."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    USER_CREATED = "account:user:created"
    KEY_CREATED = "key:api_key:created"
    KEY_UPDATED = "key:api_key:updated"
    KEY_ROTATED = "key:api_key:rotated"
    KEY_DISABLED = "key:api_key:disabled"
    KEY_ENABLED = "key:api_key:enabled"
    KEY_REVOKED = "key:api_key:revoked"
    KEY_EXPIRED = "key:api_key:expired"
    KEY_IDLE_WARNING = "key:api_key:idle_warning"
    KEYS_REVOKED_ALL = "key:api_key:revoked_all"
    KEY_LEAKED = "key:api_key:leaked"
    MASTER_KEY_ADDED = "key:master_key:added"
    MASTER_KEY_ROTATED = "key:master_key:rotated"
    MASTER_KEY_DROPPED = "key:master_key:dropped"
    AUTH_FAILED = "auth:request:failed"
    DEPOSIT_CREDITED = "exchange:deposit:credited"
    WITHDRAWAL_APPLIED = "exchange:withdrawal:applied"
    WITHDRAW_ADDRESS_ADDED = "exchange:withdraw_address:added"
    WITHDRAW_ADDRESS_REMOVED = "exchange:withdraw_address:removed"
