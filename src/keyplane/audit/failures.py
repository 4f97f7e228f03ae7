"""Auth failures in the audit log, throttled so that a flood of bad requests cannot flood the log.

The middleware calls :meth:`FailureRecorder.__call__` (``Authenticator.on_failure``) on every
rejection. That costs a dict update and nothing else: no database work on the request's path.
Failures are grouped per (key, IP, reason): the first of a group is written at the next flush; the
rest of the window only add to its count, and the group's next event (if it continues) carries
that count. A background task flushes every ``flush_s`` seconds in one transaction.

Each event records the reason, IP, route, method, the first and last time seen, and the count.
The number of groups held is bounded; past it, failures are folded into one overflow group per
reason, so memory stays bounded too.

The audit log knows no domain: a failure is anything with a stable ``code`` (the auth pipeline's
errors are), and whether a key id is safe to store is the caller's call (``keep_key_id``), so that
a header which is not a well-formed key, perhaps a secret pasted into the wrong field, never
reaches the log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from keyplane.audit import service as audit
from keyplane.audit.events import EventType
from keyplane.db import Database

log = logging.getLogger("keyplane.audit")

_MAX_GROUPS = 10_000
_OVERFLOW_IP = "*"


class Failure(Protocol):
    """What the recorder needs of a rejection: its stable reason code."""

    @property
    def code(self) -> str: ...


def _keep_no_key_id(_key_id: str) -> bool:
    return False


@dataclass(slots=True)
class _Group:
    key_id: str | None
    ip: str | None
    reason: str
    route: str
    method: str
    first: float
    last: float
    count: int = 1
    written_until: float = 0.0  # the window end of the last event written for this group


class FailureRecorder:
    def __init__(
        self,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        *,
        keep_key_id: Callable[[str], bool] = _keep_no_key_id,
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._keep_key_id = keep_key_id
        self._groups: dict[tuple[str | None, str | None, str], _Group] = {}
        self._quiet: dict[tuple[str | None, str | None, str], float] = {}  # group -> end of its window
        self.dropped = 0  # failures folded into overflow groups

    def __call__(self, error: Failure, *, key_id: str | None, ip: str | None, route: str, method: str) -> None:
        # Only a key id the caller vouches for is stored: a header that fails its checksum may be
        # anything, including a secret pasted into the wrong field.
        safe_key = key_id if key_id and self._keep_key_id(key_id) else None
        now = self._clock()
        gk = (safe_key, ip, error.code)
        group = self._groups.get(gk)
        if group is None:
            if len(self._groups) >= _MAX_GROUPS:
                self.dropped += 1
                gk = (None, _OVERFLOW_IP, error.code)
                group = self._groups.get(gk)
            if group is None:
                group = self._groups[gk] = _Group(gk[0], gk[1], error.code, route, method, now, now, 0)
        group.count += 1
        group.last = now

    def drain(self) -> list[_Group]:
        """The groups due to be written: new ones, and old ones whose window has passed."""
        now = self._clock()
        due: list[_Group] = []
        keep: dict[tuple[str | None, str | None, str], _Group] = {}
        for gk, group in self._groups.items():
            quiet_until = self._quiet.get(gk, 0.0)
            if quiet_until <= now:
                due.append(group)
                self._quiet[gk] = now + self.window_s
            else:
                keep[gk] = group
        self._groups = keep
        if len(self._quiet) > _MAX_GROUPS * 2:
            self._quiet = {k: v for k, v in self._quiet.items() if v > now}
        return due

    def restore(self, groups: list[_Group]) -> None:
        for g in groups:
            gk = (g.key_id, g.ip, g.reason)
            existing = self._groups.get(gk)
            if existing is None:
                self._groups[gk] = g
            else:
                existing.count += g.count
                existing.first = min(existing.first, g.first)
            self._quiet.pop(gk, None)


def write_failures(db: Database, groups: list[_Group]) -> None:
    """Append one ``auth:request:failed`` event per group, in one transaction."""
    with db.transaction() as session:
        for g in groups:
            audit.record(
                session,
                EventType.AUTH_FAILED,
                actor="api",
                key_id=g.key_id,
                ip=g.ip,
                data={
                    "reason": g.reason,
                    "route": g.route,
                    "method": g.method,
                    "count": g.count,
                    "first_at": dt.datetime.fromtimestamp(g.first, dt.UTC).isoformat(),
                    "last_at": dt.datetime.fromtimestamp(g.last, dt.UTC).isoformat(),
                },
            )


async def flush_failures(recorder: FailureRecorder, db: Database, interval_s: float) -> None:
    """Forever: write due failure groups off the request path. Runs in the app's lifespan."""
    while True:
        await asyncio.sleep(interval_s)
        await flush_once(recorder, db)


async def flush_once(recorder: FailureRecorder, db: Database) -> None:
    groups = recorder.drain()
    if not groups:
        return
    try:
        await asyncio.to_thread(write_failures, db, groups)
    except Exception as e:  # the database is down: keep the counts and try again next time
        log.warning("could not write auth failures to the audit log: %s", type(e).__name__)
        recorder.restore(groups)
