"""The hash chain: pure functions over an event's canonical form.

``hash = SHA-256(prev_hash || canonical_json(fields))``. Changing, removing or reordering any event
breaks every hash after it, and the first mismatch names the bad event.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Protocol

GENESIS = "0" * 64


def canonical(
    *,
    seq: int,
    created_at: dt.datetime,
    event_type: str,
    actor: str,
    user_id: int | None,
    key_id: str | None,
    ip: str | None,
    data: str,
) -> bytes:
    body: dict[str, Any] = {
        "seq": seq,
        "created_at": created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "type": event_type,
        "actor": actor,
        "user_id": user_id,
        "key_id": key_id,
        "ip": ip,
        "data": data,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def link(prev_hash: str, canonical_bytes: bytes) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_bytes).hexdigest()


class Event(Protocol):
    """What is hashed of an audit event (``keyplane.audit.models.AuditEvent``)."""

    seq: int
    created_at: dt.datetime
    event_type: str
    actor: str
    user_id: int | None
    key_id: str | None
    ip: str | None
    data: str
    prev_hash: str


def event_hash(e: Event) -> str:
    """The hash an event must carry: its canonical form linked to the previous event's hash."""
    return link(
        e.prev_hash,
        canonical(
            seq=e.seq,
            created_at=e.created_at,
            event_type=e.event_type,
            actor=e.actor,
            user_id=e.user_id,
            key_id=e.key_id,
            ip=e.ip,
            data=e.data,
        ),
    )
