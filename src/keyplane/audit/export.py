"""Export the audit log as JSON Lines or CSV, oldest first, streaming in batches.

Every row carries its ``seq``, ``prev_hash`` and ``hash``, so an exported file can be checked
against the chain (and kept elsewhere as an anchor). ``data`` is the event's JSON object; in CSV it
stays a JSON string in one column.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from typing import Any, Literal, TextIO

from sqlalchemy import select

from keyplane.audit.models import AuditEvent
from keyplane.db import Database

Format = Literal["jsonl", "csv"]
COLUMNS = ("seq", "created_at", "type", "actor", "user_id", "key_id", "ip", "data", "prev_hash", "hash")
_BATCH = 1000


def parse_since(text: str | None) -> dt.datetime | None:
    """An ISO 8601 date or date-time (UTC when no offset is given), or None."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as e:
        raise ValueError(
            f"--since must be an ISO 8601 date or date-time, like 2026-01-31 or 2026-01-31T12:00:00Z: {text!r}"
        ) from e
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def row(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "created_at": e.created_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "type": e.event_type,
        "actor": e.actor,
        "user_id": e.user_id,
        "key_id": e.key_id,
        "ip": e.ip,
        "data": json.loads(e.data or "{}"),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }


def events(db: Database, since: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        with db.read() as session:
            q = select(AuditEvent).where(AuditEvent.seq > last)
            if since is not None:
                q = q.where(AuditEvent.created_at >= since)
            batch = [row(e) for e in session.execute(q.order_by(AuditEvent.seq).limit(_BATCH)).scalars()]
        if not batch:
            return
        yield from batch
        last = batch[-1]["seq"]


def write(db: Database, out: TextIO, fmt: Format, since: dt.datetime | None = None) -> int:
    """Write the events to ``out``; returns how many."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in events(db, since):
            writer.writerow({**r, "data": json.dumps(r["data"], sort_keys=True, separators=(",", ":"))})
            count += 1
    else:
        for r in events(db, since):
            out.write(json.dumps(r, sort_keys=False, separators=(",", ":")) + "\n")
            count += 1
    return count
