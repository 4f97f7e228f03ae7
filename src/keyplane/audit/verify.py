"""Walk the audit chain and name the first event that does not fit.

Each event's hash is ``SHA-256(prev_hash || canonical(event))`` and each event carries the previous
event's hash. So:

- an **edited** event no longer matches its own hash (``hash_mismatch``);
- a **deleted** event leaves a gap in ``seq`` (``seq_gap``) and a ``prev_hash`` that names a hash
  the walk never saw (``prev_hash_mismatch``);
- **reordered** events (rows whose contents were swapped) fail their hash, because ``seq`` is part
  of what is hashed, or their ``prev_hash`` link;
- events deleted from the end are caught by the ``audit_head`` row, which holds the tip's seq and
  hash (``head_mismatch``).

A forger who recomputes every hash after an edit still cannot match ``audit_head`` unless they
rewrite that too; export the head regularly (``keyplane audit verify`` prints it) to anchor it
outside the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from keyplane.audit import chain
from keyplane.audit.chain import event_hash
from keyplane.audit.models import AuditEvent, AuditHead
from keyplane.db import Database

_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ChainProblem:
    seq: int
    kind: str  # hash_mismatch | prev_hash_mismatch | seq_gap | head_mismatch
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    events: int
    head_seq: int
    head_hash: str
    problem: ChainProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_events(events: Iterable[AuditEvent], head: tuple[int, str] | None) -> VerifyReport:
    """Check events in ``seq`` order against each other and against the head. Pure."""
    prev_seq, prev_hash = 0, chain.GENESIS
    count = 0

    def problem(seq: int, kind: str, detail: str) -> VerifyReport:
        return VerifyReport(count, prev_seq, prev_hash, ChainProblem(seq, kind, detail))

    for e in events:
        count += 1
        if e.seq != prev_seq + 1:
            detail = f"event {e.seq} follows event {prev_seq}: events {prev_seq + 1}..{e.seq - 1} are missing"
            return problem(e.seq, "seq_gap", detail)
        if e.prev_hash != prev_hash:
            return problem(e.seq, "prev_hash_mismatch", f"event {e.seq} does not link to event {prev_seq}")
        if event_hash(e) != e.hash:
            return problem(e.seq, "hash_mismatch", f"event {e.seq} ({e.event_type}) was changed after it was written")
        prev_seq, prev_hash = e.seq, e.hash
    if head is not None and (head[0] != prev_seq or head[1] != prev_hash):
        return problem(
            prev_seq + 1,
            "head_mismatch",
            f"the chain ends at event {prev_seq} but the head records event {head[0]}: events after "
            f"{prev_seq} were deleted (or the head was edited)",
        )
    return VerifyReport(count, prev_seq, prev_hash, None)


def _stream(db: Database, upto: int | None) -> Iterable[AuditEvent]:
    last = 0
    while True:
        with db.read() as session:
            batch = list(
                session.execute(
                    select(AuditEvent)
                    .where(AuditEvent.seq > last, AuditEvent.seq <= (upto if upto is not None else 2**62))
                    .order_by(AuditEvent.seq)
                    .limit(_BATCH)
                )
                .scalars()
                .all()
            )
            for e in batch:
                session.expunge(e)
        if not batch:
            return
        yield from batch
        last = batch[-1].seq


def verify_chain(db: Database) -> VerifyReport:
    """Verify the whole log in the database, in batches (memory stays flat)."""
    with db.read() as session:
        head_row = session.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one_or_none()
        head = None if head_row is None else (head_row.seq, head_row.hash)
    # Events appended while the walk runs lie past the head read here; they are left for next time.
    return check_events(_stream(db, None if head is None else head[0]), head)
