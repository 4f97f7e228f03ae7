"""The request gates: in-process and Redis. Same behaviour; Redis in one round trip, fail closed."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from keyplane.auth.errors import AuthUnavailable, IpLockedOut, RateLimited, ReplayDetected
from keyplane.auth.gates import MemoryGate, RedisGate, build_gate
from keyplane.auth.routes import RouteRule
from keyplane.settings import Settings
from kptest.backends import REDIS_URL, redis_available, unavailable
from kptest.redis_count import CountingConnection, counting_client

BINANCE = RouteRule(None, "binance", 1)
HEAVY = RouteRule(None, "binance", 4)
NATIVE = RouteRule(None, "httpsig", 1)


def _settings(tmp_path, **kw) -> Settings:
    values = {
        "data_dir": tmp_path,
        "rate_limit_per_key": "10/minute",
        "rate_limit_per_ip": "15/minute",
        "rate_limit_public_per_ip": "3/minute",
        "lockout_failures": 3,
        "lockout_window_s": 60,
        "lockout_s": 30,
        "redis_prefix": f"kptest:{secrets.token_hex(4)}:",
    }
    values.update(kw)
    return Settings(**values)


@pytest.fixture(params=["memory", "redis"])
def make_gate(request, tmp_path):
    """A gate factory; call it inside the test's event loop (a Redis client belongs to one loop)."""
    if request.param == "memory":
        return lambda: MemoryGate(_settings(tmp_path))
    if not redis_available():
        unavailable("Redis at " + REDIS_URL)
    settings = _settings(tmp_path, redis_url=REDIS_URL)
    return lambda: RedisGate(settings)


async def admit(gate, key="k1", ip="192.0.2.1", rule=BINANCE, token=None, ttl=5.0, repeatable_as=None):
    return await gate.admit(
        key_id=key, client_ip=ip, rule=rule, replay_token=token, replay_ttl_s=ttl, repeatable_as=repeatable_as
    )


def run_with(make_gate, body):
    async def main() -> None:
        gate = make_gate()
        try:
            await body(gate)
        finally:
            await gate.close()

    asyncio.run(main())


def test_build_gate_picks_the_backend(tmp_path):
    assert isinstance(build_gate(_settings(tmp_path)), MemoryGate)
    assert isinstance(build_gate(_settings(tmp_path, redis_url=REDIS_URL)), RedisGate)


def test_replay_token_accepted_once_per_key(make_gate):
    async def body(gate):
        await admit(gate, token="sig-a")
        with pytest.raises(ReplayDetected):
            await admit(gate, token="sig-a")
        await admit(gate, key="k2", token="sig-a")  # per key
        await admit(gate, token="sig-b")
        await admit(gate)  # no token: no replay check

    run_with(make_gate, body)


def test_a_repeatable_token_repeats_only_as_what_it_was(make_gate):
    """A read's token may come again on its own method and route; never on another, nor once a
    single-use request has taken it."""

    async def body(gate):
        for _ in range(3):
            await admit(gate, token="read", repeatable_as="GET order")
        with pytest.raises(ReplayDetected):
            await admit(gate, token="read")  # the same signature as a cancel
        with pytest.raises(ReplayDetected):
            await admit(gate, token="read", repeatable_as="GET openOrders")
        await admit(gate, token="read", repeatable_as="GET order")  # the read itself still repeats

        await admit(gate, token="cancel")
        with pytest.raises(ReplayDetected):
            await admit(gate, token="cancel", repeatable_as="GET order")
        await admit(gate, key="k2", token="read")  # per key

    run_with(make_gate, body)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_rate_limited_request_leaves_no_replay_token(tmp_path, backend):
    """Its retry, once the window has passed, is served rather than answered "replayed"."""
    if backend == "redis" and not redis_available():
        unavailable("Redis at " + REDIS_URL)
    settings = _settings(
        tmp_path,
        rate_limit_per_key="2/second",
        rate_limit_per_ip="100000/minute",
        redis_url=REDIS_URL if backend == "redis" else None,
    )

    async def body():
        gate = MemoryGate(settings) if backend == "memory" else RedisGate(settings)
        try:
            await admit(gate, key="rl")
            await admit(gate, key="rl")
            deadline = time.monotonic() + 5
            limited = 0
            while True:
                try:
                    await admit(gate, key="rl", token="order")
                    break
                except RateLimited:
                    limited += 1
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            assert limited >= 1
            with pytest.raises(ReplayDetected):
                await admit(gate, key="rl", token="order")
        finally:
            await gate.close()

    asyncio.run(body())


class FakeClock:
    """A monotonic clock the test moves (the gates take ``clock=``)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_memory_gate_tokens_survive_a_snapshot(tmp_path):
    async def body():
        clock = FakeClock()
        old = MemoryGate(_settings(tmp_path), clock=clock)
        await admit(old, token="once")
        await admit(old, token="read", repeatable_as="GET order")
        await admit(old, token="gone", ttl=0.01)
        clock.t += 0.02  # "gone" has expired
        snap = old.snapshot()
        assert {t for t, _, _ in snap} == {"k1:once", "k1:read"}
        new = MemoryGate(_settings(tmp_path))
        new.restore([*snap, ("k1:stale", "", time.time() - 1)])
        with pytest.raises(ReplayDetected):
            await admit(new, token="once")
        with pytest.raises(ReplayDetected):
            await admit(new, token="read")
        await admit(new, token="read", repeatable_as="GET order")
        await admit(new, token="stale")
        await admit(new, token="gone")

    asyncio.run(body())


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_replay_token_expires(tmp_path, backend):
    """The in-process gate runs on a clock the test moves. Redis keeps the token's TTL itself: there
    the test polls until the token is accepted again (with limits that the polling cannot reach)."""
    if backend == "redis" and not redis_available():
        unavailable("Redis at " + REDIS_URL)

    async def in_memory() -> None:
        clock = FakeClock()
        gate = MemoryGate(_settings(tmp_path), clock=clock)
        await admit(gate, token="short", ttl=0.2)
        clock.t += 0.19
        with pytest.raises(ReplayDetected):
            await admit(gate, token="short", ttl=0.2)
        clock.t += 0.02
        await admit(gate, token="short", ttl=0.2)

    async def in_redis() -> None:
        settings = _settings(
            tmp_path, redis_url=REDIS_URL, rate_limit_per_key="100000/minute", rate_limit_per_ip="100000/minute"
        )
        gate = RedisGate(settings)
        try:
            await admit(gate, token="short", ttl=0.2)
            deadline = time.monotonic() + 5
            while True:
                try:
                    await admit(gate, token="short", ttl=0.2)
                    break
                except ReplayDetected:
                    assert time.monotonic() < deadline, "a replay token with a 0.2 s TTL was still held after 5 s"
                    await asyncio.sleep(0.02)
        finally:
            await gate.close()

    asyncio.run(in_memory() if backend == "memory" else in_redis())


def test_key_limit_with_weights_and_headers(make_gate):
    async def body(gate):
        used = [(await admit(gate, key="w")).used for _ in range(2)]
        assert used == [1, 2]
        adm = await admit(gate, key="w", rule=HEAVY)
        assert (adm.limit, adm.used) == (10, 6)
        assert 0 < (adm.reset_s or 0) <= 60
        await admit(gate, key="w", rule=HEAVY)  # 10
        with pytest.raises(RateLimited) as info:
            await admit(gate, key="w")
        assert info.value.headers["X-MBX-USED-WEIGHT-1M"] == "11"
        assert 1 <= int(info.value.headers["Retry-After"]) <= 60
        with pytest.raises(RateLimited) as info:
            await admit(gate, key="w", rule=NATIVE)
        assert info.value.headers["RateLimit-Limit"] == "10" and info.value.headers["RateLimit-Remaining"] == "0"

    run_with(make_gate, body)


def test_ip_limit_spans_keys(make_gate):
    async def body(gate):
        for i in range(15):
            await admit(gate, key=f"key{i}", ip="198.51.100.1")
        with pytest.raises(RateLimited):
            await admit(gate, key="fresh", ip="198.51.100.1")
        await admit(gate, key="fresh", ip="198.51.100.2")

    run_with(make_gate, body)


def test_public_limit(make_gate):
    async def body(gate):
        for _ in range(3):
            await gate.admit_public("203.0.113.1", BINANCE)
        with pytest.raises(RateLimited):
            await gate.admit_public("203.0.113.1", BINANCE)
        await gate.admit_public("203.0.113.2", BINANCE)

    run_with(make_gate, body)


async def _until_locked_out(gate: MemoryGate | RedisGate, ip: str) -> None:
    """Wait (10 s at most) until ``gate`` has locked ``ip`` out: the Redis gate counts failures in
    background tasks, which a fixed pause did not always outlast on a busy machine."""
    deadline = time.monotonic() + 10
    while gate.locked_out(ip) == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def test_lockout_is_per_ip(make_gate):
    async def body(gate):
        for _ in range(3):
            gate.note_failure("203.0.113.7")
        await _until_locked_out(gate, "203.0.113.7")  # the Redis gate counts off the request path
        assert gate.locked_out("203.0.113.7") > 25
        assert gate.locked_out("203.0.113.8") == 0
        with pytest.raises(IpLockedOut):
            await admit(gate, ip="203.0.113.7")
        await admit(gate, ip="203.0.113.8")

    run_with(make_gate, body)


def test_redis_lockout_is_shared_by_nodes(tmp_path):
    if not redis_available():
        unavailable("Redis at " + REDIS_URL)
    settings = _settings(tmp_path, redis_url=REDIS_URL)
    node_a, node_b = RedisGate(settings), RedisGate(settings)

    async def run() -> None:
        for _ in range(3):
            node_a.note_failure("203.0.113.9")
        await _until_locked_out(node_a, "203.0.113.9")  # A counts the failures in the background
        assert node_b.locked_out("203.0.113.9") == 0  # B has not heard yet...
        with pytest.raises(IpLockedOut):  # ...but its one round trip sees the shared lockout
            await node_b.admit(key_id="k", client_ip="203.0.113.9", rule=BINANCE, replay_token=None, replay_ttl_s=1)
        assert node_b.locked_out("203.0.113.9") > 0
        # A token used on node A is a replay on node B.
        await node_a.admit(key_id="k", client_ip="192.0.2.5", rule=BINANCE, replay_token="t", replay_ttl_s=5)
        with pytest.raises(ReplayDetected):
            await node_b.admit(key_id="k", client_ip="192.0.2.5", rule=BINANCE, replay_token="t", replay_ttl_s=5)
        await node_a.close()
        await node_b.close()

    asyncio.run(run())


def test_redis_gate_makes_one_round_trip_per_request(tmp_path):
    if not redis_available():
        unavailable("Redis at " + REDIS_URL)
    settings = _settings(
        tmp_path, redis_url=REDIS_URL, rate_limit_per_key="1000/minute", rate_limit_per_ip="1000/minute"
    )

    async def run() -> tuple[int, int]:
        gate = RedisGate(settings, client=counting_client(REDIS_URL))
        await gate.admit(key_id="k", client_ip="192.0.2.9", rule=BINANCE, replay_token=None, replay_ttl_s=1)  # connect
        before = CountingConnection.sent
        for i in range(50):
            await gate.admit(key_id="k", client_ip="192.0.2.9", rule=BINANCE, replay_token=f"n{i}", replay_ttl_s=5)
        for _ in range(50):
            await gate.admit(key_id="k", client_ip="192.0.2.9", rule=BINANCE, replay_token=None, replay_ttl_s=5)
        sent = CountingConnection.sent - before
        await gate.close()
        return sent, 100

    sent, requests = asyncio.run(run())
    assert sent == requests  # exactly one round trip per admitted request


def test_redis_counters_are_limits_own(tmp_path):
    """The counters live where limits' RedisStorage looks: limits itself reads them back."""
    if not redis_available():
        unavailable("Redis at " + REDIS_URL)
    settings = _settings(tmp_path, redis_url=REDIS_URL)

    async def body() -> RedisGate:
        gate = RedisGate(settings)
        for _ in range(4):
            await admit(gate, key="shared")
        await gate.close()
        return gate

    gate = asyncio.run(body())
    storage = RedisStorage(REDIS_URL, key_prefix=settings.redis_prefix + "limits")
    stats = FixedWindowRateLimiter(storage).get_window_stats(gate.policy.per_key, "key", "shared")
    assert stats.remaining == 6


def test_redis_down_fails_closed(tmp_path):
    settings = _settings(tmp_path, redis_url="redis://127.0.0.1:1/0", redis_timeout_s=0.3)

    async def body() -> None:
        gate = RedisGate(settings)
        with pytest.raises(AuthUnavailable) as info:
            await admit(gate, token="state-changing")
        assert info.value.status == 503 and info.value.code == "service_unavailable"
        with pytest.raises(AuthUnavailable):
            await gate.admit_public("192.0.2.1", BINANCE)
        await gate.close()

    asyncio.run(body())
