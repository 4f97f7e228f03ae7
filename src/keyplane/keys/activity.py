"""An account's activity: its audit events and every event on one of its keys, newest first.
(It spans accounts and keys, so it lives above both: accounts sits below keys.)"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select

from keyplane.audit.models import AuditEvent
from keyplane.db import Database
from keyplane.keys.models import ApiKey

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    seq: int
    created_at: dt.datetime
    event_type: str
    actor: str
    key_id: str | None
    ip: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "type": self.event_type,
            "actor": self.actor,
            "api_key": self.key_id,
            "ip": self.ip,
            "data": self.data,
        }


def activity(
    db: Database, user_id: int, *, limit: int = 200, before: int | None = None, key_id: str | None = None
) -> list[ActivityEvent]:
    """The account's audit events, newest first: its own events and any event on one of its keys."""
    with db.read() as s:
        key_ids = select(ApiKey.public_id).where(ApiKey.user_id == user_id).scalar_subquery()
        stmt = select(AuditEvent).where(or_(AuditEvent.user_id == user_id, AuditEvent.key_id.in_(key_ids)))
        if before is not None:
            stmt = stmt.where(AuditEvent.seq < before)
        if key_id is not None:
            stmt = stmt.where(AuditEvent.key_id == key_id)
        rows = s.execute(stmt.order_by(AuditEvent.seq.desc()).limit(max(1, min(limit, MAX_PAGE)))).scalars()
        return [
            ActivityEvent(e.seq, e.created_at, e.event_type, e.actor, e.key_id, e.ip, json.loads(e.data or "{}"))
            for e in rows
        ]
