"""Cross-node key-cache invalidation over Redis pub/sub.

When a key changes (revoked, disabled, rotated, updated...), the :class:`KeyService` that committed
the change calls its listeners with the key ids. :class:`KeyChangePublisher` is one of them: it
publishes the ids on ``<redis_prefix>keys:changed``. Every server runs :func:`subscribe_changes`,
which evicts those ids from its :class:`KeyCache` as they arrive, so the next request on any node
reloads the key from the database and sees the change (milliseconds, not the poll interval).

If the subscription drops, nothing is lost: the database poller (``auth/keycache.py``) keeps
running on every node and evicts changed keys every ``key_cache_poll_s`` (0.25 s by default), and
if that poller cannot reach the database for ``key_cache_max_staleness_s`` signed requests fail
closed. So with the broadcast down, revocation falls back to the poller's bound; the subscriber
reconnects with a short back-off, and clears the cache on reconnect (changes published while it was
away are not replayed by Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from keyplane.auth.keycache import KeyCache
from keyplane.settings import Settings

log = logging.getLogger("keyplane.auth")


def channel(settings: Settings) -> str:
    return settings.redis_prefix + "keys:changed"


def subscriber_name(settings: Settings) -> str:
    """The Redis client name of this deployment's subscriptions (CLIENT LIST shows it)."""
    return "keyplane-sub-" + "".join(ch if ch.isalnum() or ch in ":-_" else "_" for ch in settings.redis_prefix)


class KeyChangePublisher:
    """A ``KeyService`` listener. Publishing is best effort: the poller is the safety net."""

    def __init__(self, settings: Settings, client: Any = None) -> None:
        import redis

        self.channel = channel(settings)
        self.redis = client or redis.Redis.from_url(
            settings.redis_url or "",
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
        )

    def __call__(self, public_ids: Sequence[str]) -> None:
        if not public_ids:
            return
        try:
            self.redis.publish(self.channel, ",".join(public_ids))
        except Exception as e:
            log.warning("could not broadcast a key change (the poller will catch it): %s", type(e).__name__)

    def close(self) -> None:
        self.redis.close()


class SubscriberStatus:
    """Observable state of this node's subscription (for tests and /healthz-style probes)."""

    def __init__(self) -> None:
        self.connected = False
        self.connects = 0
        self.messages = 0


async def subscribe_changes(
    settings: Settings, cache: KeyCache, status: SubscriberStatus | None = None, retry_s: float = 0.5
) -> None:
    """Forever: evict the key ids published on the change channel. Runs in the app's lifespan."""
    import redis.asyncio as aioredis

    status = status or SubscriberStatus()
    name = channel(settings)
    while True:
        client = aioredis.Redis.from_url(
            settings.redis_url or "",
            socket_connect_timeout=settings.redis_timeout_s,
            client_name=subscriber_name(settings),
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(name)
            # Anything published while this node was not subscribed is gone: start from a clean cache.
            if status.connects:
                cache.clear()
            status.connected = True
            status.connects += 1
            async for message in pubsub.listen():
                if message.get("type") != "message":
                    continue
                data = message.get("data", b"")
                text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
                cache.evict([pid for pid in text.split(",") if pid])
                status.messages += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("key change subscription lost (the poller still runs): %s", type(e).__name__)
        finally:
            status.connected = False
            with contextlib.suppress(Exception):  # the connection is already gone
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
        await asyncio.sleep(retry_s)
