"""The in-process key cache, and how it learns that a key changed.

Lookups are a dict read. A miss loads the key from the database (in a worker thread) and caches it,
including "no such key" for a few seconds so a flood of unknown keys cannot flood the database.

Three things evict entries:
- the key service in this process, at once, after it commits a change;
- a poller that asks the database every ``key_cache_poll_s`` which keys changed (this is what makes
  a revoke from the CLI or from another node take effect without Redis);
- a Redis broadcast, where configured (multi-node mode).

Fail closed: if the poller has not succeeded for ``key_cache_max_staleness_s``, the cache may be
hiding a revocation, so :meth:`KeyCache.check_fresh` raises and signed requests get a 503.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from keyplane.auth.errors import AuthUnavailable
from keyplane.keys.record import KeyRecord

log = logging.getLogger("keyplane.auth")

_NEGATIVE_TTL_S = 5.0
_POLL_OVERLAP = dt.timedelta(seconds=2)  # re-read a little of the past: commits can land late


class _Miss:
    def __repr__(self) -> str:
        return "MISS"


MISS = _Miss()


class KeyCache:
    def __init__(
        self,
        loader: Callable[[str], KeyRecord | None],
        *,
        max_staleness_s: float | None = None,
        max_entries: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._entries: dict[str, KeyRecord] = {}
        self._negative: dict[str, float] = {}
        self._max_entries = max_entries
        self._clock = clock
        self.max_staleness_s = max_staleness_s
        self.last_fresh = clock()
        self.generation = 0  # bumped on every eviction, so an in-flight load cannot resurrect a stale entry
        # Called (on the loop) after keys are evicted: whatever holds a key beyond one request (an
        # open user-data stream) checks it again (keyplane.streams.userfeed).
        self.on_evict: list[Callable[[], None]] = []

    def check_fresh(self) -> None:
        if self.max_staleness_s is not None and self._clock() - self.last_fresh > self.max_staleness_s:
            raise AuthUnavailable("key revocations cannot be checked right now (database unreachable); try again")

    def mark_fresh(self) -> None:
        self.last_fresh = self._clock()

    def hot(self, public_id: str) -> KeyRecord | None:
        """The cached record if there is one and the cache is fresh: the per-request fast path."""
        if self.max_staleness_s is not None and self._clock() - self.last_fresh > self.max_staleness_s:
            return None
        return self._entries.get(public_id)

    def get(self, public_id: str) -> KeyRecord | _Miss | None:
        """The cached record, None for a cached "no such key", or MISS if nothing is cached."""
        rec = self._entries.get(public_id)
        if rec is not None:
            return rec
        until = self._negative.get(public_id)
        if until is not None:
            if until > self._clock():
                return None
            del self._negative[public_id]
        return MISS

    async def load(self, public_id: str) -> KeyRecord | None:
        generation = self.generation
        try:
            rec = await asyncio.to_thread(self._loader, public_id)
        except Exception as e:
            log.warning("key lookup failed: %s", type(e).__name__)
            raise AuthUnavailable("the key store is unavailable; try again") from e
        if generation == self.generation:
            self.put(public_id, rec)
        return rec

    def put(self, public_id: str, rec: KeyRecord | None) -> None:
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        if rec is None:
            if len(self._negative) >= self._max_entries:
                self._negative.clear()
            self._negative[public_id] = self._clock() + _NEGATIVE_TTL_S
        else:
            self._entries[public_id] = rec
            self._negative.pop(public_id, None)

    def evict(self, public_ids: Iterable[str]) -> None:
        self.generation += 1
        for pid in public_ids:
            self._entries.pop(pid, None)
            self._negative.pop(pid, None)
        self._evicted()

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._negative.clear()
        self._evicted()

    def _evicted(self) -> None:
        for listener in self.on_evict:
            listener()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, public_id: object) -> bool:
        return public_id in self._entries


async def poll_changes(
    cache: KeyCache,
    changed_since: Callable[[dt.datetime], list[str]],
    interval_s: float,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> None:
    """Forever: evict the keys whose rows changed since the last poll. Runs in the app's lifespan.

    The poll runs on a thread of its own, never in the pool that request work shares: with that
    pool busy (slow statements, lock waits), a poll queued behind requests would let the cache go
    stale and fail every signed request closed while the database is healthy."""
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyplane-key-poll")
    since = now() - _POLL_OVERLAP
    try:
        while True:
            started = now()
            try:
                changed = await loop.run_in_executor(pool, changed_since, since)
            except Exception as e:  # the database is down: stay stale, and signed requests fail closed
                log.warning("key change poll failed: %s", type(e).__name__)
            else:
                if changed:
                    cache.evict(changed)
                cache.mark_fresh()
                since = started - _POLL_OVERLAP
            await asyncio.sleep(interval_s)
    finally:
        # A poll still running holds one of the database's connections: wait for it (off the loop;
        # a statement is bounded by db_statement_timeout_s) so that the lifespan ends with it
        # returned, before the database is closed, not after.
        pool.shutdown(wait=False, cancel_futures=True)
        await loop.run_in_executor(None, pool.shutdown)


class UsageRecorder:
    """Collects last-used time and IP per key in memory; a background task writes them in batches,
    so no request writes to a hot key row. ``last_seen`` also feeds the idle-expiry check."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[float, str | None]] = {}
        self.last_seen: dict[str, float] = {}

    def touch(self, public_id: str, when: float, ip: str | None) -> None:
        self._pending[public_id] = (when, ip)
        self.last_seen[public_id] = when

    def drain(self) -> dict[str, tuple[dt.datetime, str | None]]:
        pending, self._pending = self._pending, {}
        return {k: (dt.datetime.fromtimestamp(t, dt.UTC), ip) for k, (t, ip) in pending.items()}

    def restore(self, batch: dict[str, tuple[dt.datetime, str | None]]) -> None:
        for k, (when, ip) in batch.items():
            self._pending.setdefault(k, (when.timestamp(), ip))


async def flush_usage(recorder: UsageRecorder, write: Callable[[Any], None], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        batch = recorder.drain()
        if not batch:
            continue
        try:
            await asyncio.to_thread(write, batch)
        except Exception as e:
            log.warning("could not record key usage: %s", type(e).__name__)
            recorder.restore(batch)
