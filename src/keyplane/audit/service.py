"""Writing audit events.

:func:`record` runs inside the caller's transaction, so an event commits or rolls back with the
change it records. It locks the chain head row; concurrent writers queue there instead of forking
the chain. (On SQLite the write transaction already holds the database's write lock.)
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keyplane.audit import chain
from keyplane.audit.events import EventType
from keyplane.audit.models import AuditEvent, AuditHead
from keyplane.db import utcnow


def record(
    session: Session,
    event_type: EventType | str,
    *,
    actor: str,
    user_id: int | None = None,
    key_id: str | None = None,
    ip: str | None = None,
    data: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> AuditEvent:
    """Append one event to the chain in ``session``'s transaction. Never pass a secret in ``data``."""
    head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
    created_at = now or utcnow()
    data_text = json.dumps(data or {}, sort_keys=True, separators=(",", ":"), default=str)
    event = AuditEvent(
        seq=head.seq + 1,
        created_at=created_at,
        event_type=str(event_type),
        actor=actor,
        user_id=user_id,
        key_id=key_id,
        ip=ip,
        data=data_text,
        prev_hash=head.hash,
    )
    event.hash = chain.event_hash(event)
    session.add(event)
    head.seq, head.hash = event.seq, event.hash
    session.flush()
    return event
