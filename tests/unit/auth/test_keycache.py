from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from keyplane.auth.errors import AuthUnavailable
from keyplane.auth.keycache import MISS, KeyCache, UsageRecorder, poll_changes
from keyplane.keys.record import KeyRecord
from keyplane.keys.scopes import Restrictions, Scope


def _record(pid: str) -> KeyRecord:
    return KeyRecord(
        db_id=1,
        public_id=pid,
        user_id=1,
        key_type="hmac",
        scopes=frozenset({Scope.READ}),
        restrictions=Restrictions(),
        status="active",
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_hit_miss_negative_and_evict():
    loads: list[str] = []

    def loader(pid: str) -> KeyRecord | None:
        loads.append(pid)
        return _record(pid) if pid == "known" else None

    clock = Clock()
    cache = KeyCache(loader, clock=clock)
    assert cache.get("known") is MISS
    assert asyncio.run(cache.load("known")) is not None
    assert isinstance(cache.get("known"), KeyRecord)
    assert "known" in cache
    assert asyncio.run(cache.load("ghost")) is None
    assert cache.get("ghost") is None  # cached "no such key"
    clock.t += 10
    assert cache.get("ghost") is MISS  # ... for a few seconds only
    cache.evict(["known"])
    assert cache.get("known") is MISS
    assert loads == ["known", "ghost"]


def test_an_eviction_during_a_load_wins():
    cache: KeyCache

    def loader(pid: str) -> KeyRecord:
        cache.evict([pid])  # the key changes while it is being loaded
        return _record(pid)

    cache = KeyCache(loader)
    asyncio.run(cache.load("k"))
    assert cache.get("k") is MISS


def test_loader_failure_fails_closed():
    def loader(pid: str) -> KeyRecord:
        raise OSError("database down")

    with pytest.raises(AuthUnavailable):
        asyncio.run(KeyCache(loader).load("k"))


def test_staleness_fails_closed():
    clock = Clock()
    cache = KeyCache(lambda pid: None, max_staleness_s=2.0, clock=clock)
    cache.check_fresh()
    clock.t += 3
    with pytest.raises(AuthUnavailable, match="revocations cannot be checked"):
        cache.check_fresh()
    cache.mark_fresh()
    cache.check_fresh()


def test_poller_evicts_changed_keys_and_marks_fresh():
    cache = KeyCache(_record)
    cache.put("a", _record("a"))
    cache.put("b", _record("b"))
    calls = []

    def changed_since(since: dt.datetime) -> list[str]:
        calls.append(since)
        return ["a"]

    async def run() -> None:
        task = asyncio.create_task(poll_changes(cache, changed_since, 0.01))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(run())
    assert cache.get("a") is MISS
    assert isinstance(cache.get("b"), KeyRecord)
    assert len(calls) >= 2


def test_usage_recorder_batches_and_restores():
    rec = UsageRecorder()
    rec.touch("k", 100.0, "1.2.3.4")
    rec.touch("k", 200.0, "5.6.7.8")
    batch = rec.drain()
    assert list(batch) == ["k"]
    assert batch["k"][1] == "5.6.7.8"
    assert rec.drain() == {}
    rec.restore(batch)
    assert rec.drain()["k"][0] == batch["k"][0]
    assert rec.last_seen["k"] == 200.0


def test_the_poller_does_not_queue_behind_a_busy_shared_thread_pool():
    """Request work can fill the shared thread pool (slow statements, lock waits); the key cache
    must still see its polls succeed, or it would fail every signed request closed."""
    import threading

    cache = KeyCache(lambda pid: None, max_staleness_s=10.0)
    release = threading.Event()
    polled = asyncio.Event()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        # Occupy every thread of the default pool.
        blockers = [loop.run_in_executor(None, release.wait, 10) for _ in range(64)]

        def changed_since(since: dt.datetime) -> list[str]:
            loop.call_soon_threadsafe(polled.set)
            return []

        cache.last_fresh -= 100  # stale
        task = asyncio.create_task(poll_changes(cache, changed_since, 0.01))
        try:
            await asyncio.wait_for(polled.wait(), 5)
            deadline = loop.time() + 5
            while loop.time() < deadline:
                try:
                    cache.check_fresh()
                    break
                except AuthUnavailable:
                    await asyncio.sleep(0.01)
            cache.check_fresh()
        finally:
            task.cancel()
            release.set()
            await asyncio.gather(task, *blockers, return_exceptions=True)

    asyncio.run(scenario())
