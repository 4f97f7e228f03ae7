"""Measure Redis round trips: a connection class that counts every request it writes."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


class CountingConnection(aioredis.Connection):
    """Each ``send_packed_command`` is one write of one or more commands, answered in one read
    burst: one round trip. ``sent`` counts them across every connection of the class."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        await super().send_packed_command(command, check_health)


def counting_client(url: str, **kw: Any) -> aioredis.Redis:
    # from_url: the client owns its pool, so ``aclose()`` closes the connections too.
    return aioredis.Redis.from_url(url, connection_class=CountingConnection, **kw)
