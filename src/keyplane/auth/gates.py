"""The request gate's backends: :class:`MemoryGate` answers from memory (one node),
:class:`RedisGate` in a single round trip for several nodes, and :func:`build_gate` picks one.
The contract they keep (``RequestGate``), what they answer (``Admission``) and the limits and
lockouts they share are in ``auth/admission.py``.

:class:`RedisGate` answers a signed request in **one** Redis round trip and one command: a Lua
script (``EVALSHA``) that probes the lockout, does the replay ``SET NX PX`` and increments both
counters. The counters follow ``limits``' fixed-window strategy exactly (its ``incr_expire``:
``INCRBY``, then ``EXPIRE`` on the first hit of a window) under the key names its ``RedisStorage``
uses (``key_prefix=<redis_prefix>limits``), so ``limits`` itself reads them back; the limits, their
parsing and key names come from ``limits``. One script rather than a pipeline of ``limits`` calls
because the client-side cost of a 5-command pipeline was 2.4x that of one command (measured: see
benchmarks/auth/README.md). Any Redis error fails the request closed (503): a state-changing
request is never served without its replay check.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import limits
from limits.storage import MemoryStorage, RedisStorage

from keyplane.auth.admission import MAX_TRACKED, Admission, Lockouts, Policy
from keyplane.auth.errors import AuthUnavailable, IpLockedOut, ReplayDetected
from keyplane.auth.routes import RouteRule
from keyplane.settings import Settings

log = logging.getLogger("keyplane.auth")


# KEYS: lockout, replay token ("" when none), key counter, IP counter
# ARGV: replay TTL in ms ("0" = no replay check), weight, key window (s), IP window (s),
#       what the token may repeat as ("" = nothing: it is accepted once), key limit, IP limit
# Returns {-1, lockout ms left} | {-2} (replayed) | {key used, IP used, key window ms left}
# The counters come first: a request over a limit is not served, so it leaves no replay token and
# its retry is not answered "replayed"; a replayed request still spends its weight.
_ADMIT_LUA = """
local lock = redis.call('pttl', KEYS[1])
if lock > 0 then return {-1, lock} end
local amount = tonumber(ARGV[2])
local used = redis.call('incrby', KEYS[3], amount)
if used == amount then redis.call('expire', KEYS[3], ARGV[3]) end
local ip_used = redis.call('incrby', KEYS[4], amount)
if ip_used == amount then redis.call('expire', KEYS[4], ARGV[4]) end
local ttl = redis.call('pttl', KEYS[3])
if used > tonumber(ARGV[6]) or ip_used > tonumber(ARGV[7]) then return {used, ip_used, ttl} end
if ARGV[1] ~= '0' then
  local bound = ARGV[5]
  if bound == '' then bound = '!' end
  if not redis.call('set', KEYS[2], bound, 'NX', 'PX', ARGV[1]) then
    if ARGV[5] == '' or redis.call('get', KEYS[2]) ~= ARGV[5] then return {-2} end
  end
end
return {used, ip_used, ttl}
"""


class _SweptMemoryStorage(MemoryStorage):
    """``limits``' MemoryStorage without its 10 ms timer thread, for one thread.

    MemoryStorage restarts a ``threading.Timer`` on every ``incr`` once the previous one has fired:
    under load that is about a hundred thread starts a second, each walking every counter while the
    request path waits for the GIL. :class:`MemoryGate` counts in the storage's own tables itself
    (``_hit``), starting a new window when the last one has ended, so only the memory clean-up needs
    the sweep, and the gate runs it itself, once a second, inline.
    """

    def _MemoryStorage__schedule_expiry(self) -> None:  # overrides a name-mangled method
        return None

    def sweep(self) -> None:
        self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class _Limit(NamedTuple):
    """A limit as the in-process gate uses it, read once from its ``limits`` item."""

    item: limits.RateLimitItem
    amount: int
    window_s: float

    @classmethod
    def of(cls, item: limits.RateLimitItem) -> _Limit:
        return cls(item, item.amount, float(item.get_expiry()))


class MemoryGate:
    """In-process replay guard, limits and lockout, for one node."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = Policy(settings)
        self.storage = _SweptMemoryStorage()
        self._next_sweep = 0.0
        self._clock = clock
        # token -> (what it may repeat as, "" for nothing; monotonic expiry)
        self._tokens: dict[str, tuple[str, float]] = {}
        # Epoch seconds: requests signed before this cannot be checked against the tokens a
        # previous process saw (see auth/replaylog.py); 0 when this gate has seen them all.
        self.replay_since_s = 0.0
        self._next_purge = 0.0
        self.lockouts = Lockouts(clock)
        # Read once for the per-request path: each limit's amount and window, and limits' key
        # names for each API key and client IP (limits builds the name anew on every call).
        p = self.policy
        self._per_key = _Limit.of(p.per_key)
        self._per_ip = _Limit.of(p.per_ip)
        self._public = _Limit.of(p.public_ip)
        self._failures = _Limit.of(p.failures)
        self._names: dict[tuple[str, str], str] = {}

    def _replay(self, token: str, ttl_s: float, repeatable_as: str | None) -> bool:
        """True if ``token`` was seen within its TTL and may not be used again as ``repeatable_as``
        (None: a single use); otherwise remember it."""
        now = self._clock()
        if now >= self._next_purge:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            self._next_purge = now + 1.0
        seen = self._tokens.get(token)
        if seen is not None and seen[1] > now:
            return repeatable_as is None or seen[0] != repeatable_as
        self._tokens[token] = (repeatable_as or "", now + ttl_s)
        return False

    def snapshot(self) -> list[tuple[str, str, float]]:
        """Every live replay token as (token, what it may repeat as, epoch-second expiry)."""
        now, wall = self._clock(), time.time()
        return [(k, bound, wall + until - now) for k, (bound, until) in self._tokens.items() if until > now]

    def restore(self, tokens: list[tuple[str, str, float]]) -> None:
        """Take back the tokens of :meth:`snapshot`, from a previous process."""
        now, wall = self._clock(), time.time()
        for token, bound, expires in tokens:
            if expires > wall:
                self._tokens[token] = (bound, now + expires - wall)

    in_process = True

    async def admit(
        self,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        if (left := self.lockouts.left(client_ip)) > 0:
            raise IpLockedOut(left)
        return self.admit_now(key_id, client_ip, rule, replay_token, replay_ttl_s, repeatable_as)

    def _hit(self, limit: _Limit, kind: str, ident: str, cost: int) -> tuple[int, float]:
        """Add ``cost`` to ``ident``'s counter of ``limit`` (``self._per_key`` and the like) in
        limits' MemoryStorage, as its fixed window does (so limits' own reads see the same counts),
        without its per-key lock, which a gate used from one thread does not need; returns (the
        count in this window, seconds until the window ends)."""
        now = time.time()
        if now >= self._next_sweep:
            self._next_sweep = now + 1.0
            self.storage.sweep()
        name = self._names.get((kind, ident))
        if name is None:
            if len(self._names) >= MAX_TRACKED:
                self._names.clear()
            name = self._names[kind, ident] = limit.item.key_for(kind, ident)
        counts, ends = self.storage.storage, self.storage.expirations
        end = ends.get(name, 0.0)
        if end <= now:  # no window yet, or it ended: a new one
            counts[name] = cost
            ends[name] = end = now + limit.window_s
            return cost, end - now
        used = counts[name] = counts[name] + cost
        return used, end - now

    def admit_now(
        self,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        """:meth:`admit` for a caller that has just checked :meth:`locked_out` (the pipeline).

        The limits first: a request over one is not served, so it leaves no replay token."""
        used, reset = self._hit(self._per_key, "key", key_id, rule.weight)
        if used > self._per_key.amount:
            raise self.policy.rejection(self._per_key.item, used, reset, rule, "by this API key")
        ip_used, ip_reset = self._hit(self._per_ip, "ip", client_ip, rule.weight)
        if ip_used > self._per_ip.amount:
            raise self.policy.rejection(self._per_ip.item, ip_used, ip_reset, rule, "from this IP")
        if replay_token is not None and self._replay(f"{key_id}:{replay_token}", replay_ttl_s, repeatable_as):
            raise ReplayDetected("this signed request was already accepted once: sign each request anew")
        return self.policy.admission(used, reset)

    async def admit_public(self, client_ip: str, rule: RouteRule) -> Admission:
        used, reset = self._hit(self._public, "public", client_ip, rule.weight)
        if used > self._public.amount:
            raise self.policy.rejection(self._public.item, used, reset, rule, "from this IP")
        return Admission(self._public.amount, used, max(0, math.ceil(reset)))

    def locked_out(self, client_ip: str) -> float:
        return self.lockouts.left(client_ip)

    def note_failure(self, client_ip: str) -> None:
        failures, _ = self._hit(self._failures, "fail", client_ip, 1)
        if failures >= self._failures.amount:
            self.lockouts.lock(client_ip, self.policy.lockout_s)

    async def close(self) -> None:
        return None


class RedisGate:
    """Replay guard, limits and lockout shared by every node through one Redis."""

    in_process = False

    def __init__(self, settings: Settings, client: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        import redis.asyncio as aioredis

        self.policy = Policy(settings)
        self.redis = client or aioredis.Redis.from_url(
            settings.redis_url or "",
            socket_timeout=settings.redis_timeout_s,
            socket_connect_timeout=settings.redis_timeout_s,
            client_name="keyplane-gate",
        )
        self.prefix = settings.redis_prefix
        # Key names exactly as limits' RedisStorage(key_prefix=...) builds them.
        self.limits_prefix = settings.redis_prefix + "limits"
        # limits' own fixed-window increment, for the single counters (public, failures).
        self._incr = self.redis.register_script(RedisStorage.SCRIPT_INCR_EXPIRE.decode("utf-8"))
        self._admit = self.redis.register_script(_ADMIT_LUA)
        self.lockouts = Lockouts(clock)
        self._pending: set[asyncio.Task[None]] = set()

    def _counter(self, item: limits.RateLimitItem, *ids: str) -> str:
        return f"{self.limits_prefix}:{item.key_for(*ids)}"

    # Redis keeps the tokens across restarts of any node.
    replay_since_s = 0.0

    def admit_now(
        self,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        raise NotImplementedError("RedisGate answers over the network: await admit()")

    def _lock_key(self, ip: str) -> str:
        return f"{self.prefix}lockout:{ip}"

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        # EVALSHA; after a Redis restart (NOSCRIPT, nothing ran) redis-py loads the script and retries.
        try:
            return await script(keys=keys, args=args)
        except Exception as e:  # redis errors, timeouts, refused connections: fail closed
            log.warning("redis gate unavailable: %s", type(e).__name__)
            raise AuthUnavailable(
                "the replay guard and rate limiter are unavailable (Redis unreachable); try again"
            ) from e

    async def admit(
        self,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        if (left := self.lockouts.left(client_ip)) > 0:
            raise IpLockedOut(left)
        p = self.policy
        replay_key = f"{self.prefix}replay:{key_id}:{replay_token}" if replay_token is not None else ""
        replay_ms = max(1, int(replay_ttl_s * 1000)) if replay_token is not None else 0
        result = await self._call(
            self._admit,
            [
                self._lock_key(client_ip),
                replay_key,
                self._counter(p.per_key, "key", key_id),
                self._counter(p.per_ip, "ip", client_ip),
            ],
            [
                replay_ms,
                rule.weight,
                p.per_key.get_expiry(),
                p.per_ip.get_expiry(),
                repeatable_as or "",
                p.per_key.amount,
                p.per_ip.amount,
            ],
        )
        if int(result[0]) == -1:
            self.lockouts.lock(client_ip, int(result[1]) / 1000.0)
            raise IpLockedOut(int(result[1]) / 1000.0)
        if int(result[0]) == -2:
            raise ReplayDetected("this signed request was already accepted once: sign each request anew")
        used, ip_used, ttl_ms = (int(x) for x in result)
        reset = ttl_ms / 1000.0 if ttl_ms > 0 else float(p.per_key.get_expiry())
        if used > p.per_key.amount:
            raise p.rejection(p.per_key, used, reset, rule, "by this API key")
        if ip_used > p.per_ip.amount:
            raise p.rejection(p.per_ip, ip_used, float(p.per_ip.get_expiry()), rule, "from this IP")
        return p.admission(used, reset)

    async def admit_public(self, client_ip: str, rule: RouteRule) -> Admission:
        p = self.policy
        counter = self._counter(p.public_ip, "public", client_ip)
        used = int(await self._call(self._incr, [counter], [p.public_ip.get_expiry(), rule.weight]))
        if used > p.public_ip.amount:
            raise p.rejection(p.public_ip, used, float(p.public_ip.get_expiry()), rule, "from this IP")
        return Admission(limit=p.public_ip.amount, used=used, reset_s=p.public_ip.get_expiry())

    def locked_out(self, client_ip: str) -> float:
        return self.lockouts.left(client_ip)

    def note_failure(self, client_ip: str) -> None:
        """Count the failure in Redis off the request's path (a background task)."""
        try:
            task = asyncio.get_running_loop().create_task(self._count_failure(client_ip))
        except RuntimeError:
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _count_failure(self, client_ip: str) -> None:
        p = self.policy
        try:
            counter = self._counter(p.failures, "fail", client_ip)
            failures = int(await self._incr(keys=[counter], args=[p.failures.get_expiry(), 1]))
            if failures >= p.failures.amount:
                await self.redis.set(self._lock_key(client_ip), b"1", ex=p.lockout_s)
                self.lockouts.lock(client_ip, p.lockout_s)
        except Exception as e:
            log.warning("could not count an auth failure in redis: %s", type(e).__name__)

    async def close(self) -> None:
        await self.redis.aclose()


def build_gate(settings: Settings) -> MemoryGate | RedisGate:
    """Redis when ``KEYPLANE_REDIS_URL`` is set, in-process otherwise."""
    return RedisGate(settings) if settings.redis_url else MemoryGate(settings)
