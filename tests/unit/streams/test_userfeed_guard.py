"""The user-data guard ends a listenKey's stream only on the answer about that listenKey: a stream
subscribed while a check of the others runs is not ended by that check (it was not in it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from keyplane.services import build_services
from keyplane.streams.listenkeys import digest
from keyplane.streams.subscriber import Subscriber
from keyplane.streams.userfeed import LISTEN_KEY_ENDED, UserFeed, UserStream
from kptest.exchange import funded_user


def _stream(uid: int, key_id: str, token: str) -> UserStream:
    return UserStream(Subscriber(), uid, key_id, None, wrap=lambda t: t, terminated=None, listen_digest=digest(token))


async def _always_fine(key_id: str, ip: str | None) -> None:
    return None


def test_a_stream_subscribed_during_a_check_is_not_ended_by_it(make_settings) -> None:
    svc = build_services(make_settings())
    try:
        assert svc.exchange is not None
        feed = UserFeed(svc.exchange, time.time)
        uid = funded_user(svc)
        first_token, late_token = feed.listen_keys.create(uid, "kp_key"), feed.listen_keys.create(uid, "kp_key")
        first, late = _stream(uid, "kp_key", first_token), _stream(uid, "kp_key", late_token)
        real_valid = feed.listen_keys.valid

        def valid_while_another_subscribes(digests: Iterable[str]) -> set[str]:
            wanted = set(digests)
            feed._streams[uid].add(late)  # subscribed while this check reads the database
            return real_valid(wanted)

        feed.listen_keys.valid = valid_while_another_subscribes  # type: ignore[method-assign]

        async def body() -> None:
            await feed.subscribe(first)
            await feed._check_all(_always_fine)
            assert first in feed._streams[uid] and late in feed._streams[uid]
            assert first.sub.closing is None and late.sub.closing is None
            feed.listen_keys.valid = real_valid  # type: ignore[method-assign]
            feed.listen_keys.close("kp_key", late_token)  # now it really ends
            await feed._check_all(_always_fine)
            assert late not in feed._streams.get(uid, set()) and late.sub.closing == (1008, LISTEN_KEY_ENDED)
            assert first in feed._streams[uid]

        asyncio.run(body())
    finally:
        svc.close()
