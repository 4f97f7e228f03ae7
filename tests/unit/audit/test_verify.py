"""The chain walk: every kind of tampering is caught, and the first bad event is named."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from keyplane.audit import chain
from keyplane.audit.models import AuditEvent
from keyplane.audit.verify import check_events, event_hash


def _chain(n: int) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    prev = chain.GENESIS
    for seq in range(1, n + 1):
        e = AuditEvent(
            seq=seq,
            created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seq),
            event_type="key:api_key:created",
            actor="admin:cli",
            user_id=1,
            key_id=f"kp_live_{seq}",
            ip=None,
            data="{}",
            prev_hash=prev,
            hash="",
        )
        e.hash = event_hash(e)
        prev = e.hash
        events.append(e)
    return events


def _head(events: list[AuditEvent]) -> tuple[int, str]:
    return events[-1].seq, events[-1].hash


def test_an_intact_chain_verifies():
    events = _chain(6)
    report = check_events(events, _head(events))
    assert report.ok and report.events == 6 and report.head_seq == 6


def test_empty_chain():
    assert check_events([], (0, chain.GENESIS)).ok


@pytest.mark.parametrize("field", ["event_type", "actor", "user_id", "key_id", "ip", "data", "created_at"])
def test_an_edited_field_is_named(field):
    events = _chain(6)
    head = _head(events)
    value = {"user_id": 2, "created_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)}.get(field, "tampered")
    setattr(events[3], field, value)
    report = check_events(events, head)
    assert report.problem is not None
    assert (report.problem.seq, report.problem.kind) == (4, "hash_mismatch")
    assert report.head_seq == 3  # everything before the bad event verified


def test_a_deleted_event_is_named():
    events = _chain(6)
    head = _head(events)
    del events[2]
    report = check_events(events, head)
    assert report.problem is not None and (report.problem.seq, report.problem.kind) == (4, "seq_gap")
    assert "3..3 are missing" in report.problem.detail


def test_a_deleted_and_renumbered_event_is_named():
    events = _chain(6)
    head = _head(events)
    del events[2]
    for e in events[2:]:
        e.seq -= 1
    report = check_events(events, head)
    assert report.problem is not None and (report.problem.seq, report.problem.kind) == (3, "prev_hash_mismatch")


def test_reordered_events_are_named():
    events = _chain(6)
    head = _head(events)
    events[1], events[2] = events[2], events[1]
    report = check_events(events, head)
    assert report.problem is not None and report.problem.seq == 3 and report.problem.kind == "seq_gap"
    # Swapping the rows' contents but keeping seq in order breaks the hash of the first one moved.
    events = _chain(6)
    a, b = events[1], events[2]
    a.seq, b.seq = b.seq, a.seq
    events[1], events[2] = b, a
    report = check_events(events, head)
    assert report.problem is not None and report.problem.seq == 2


def test_a_truncated_tail_is_caught_by_the_head():
    events = _chain(6)
    head = _head(events)
    report = check_events(events[:4], head)
    assert report.problem is not None and report.problem.kind == "head_mismatch" and report.problem.seq == 5


def test_a_recomputed_forgery_is_caught_by_the_head():
    """Editing an event and recomputing every hash after it still disagrees with the head row."""
    events = _chain(5)
    head = _head(events)
    events[1].ip = "6.6.6.6"
    prev = events[0].hash
    for e in events[1:]:
        e.prev_hash = prev
        e.hash = event_hash(e)
        prev = e.hash
    report = check_events(events, head)
    assert report.problem is not None and report.problem.kind == "head_mismatch"
    assert dataclasses.asdict(report.problem)["seq"] == 6
