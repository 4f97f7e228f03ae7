"""The request gate's contract, and what its two backends share.

The gate is the replay guard and the rate limits behind one call, made after the signature is
verified. :class:`RequestGate` is the contract and :class:`Admission` what it answers. The backends are in
``auth/gates.py``: ``MemoryGate`` answers from memory (one node), ``RedisGate`` in a single round
trip for several nodes.

Both do the same four things, with the ``limits`` library's fixed-window counters:

- **replay guard**: a token (an httpsig nonce, or the bytes of a binance signature) is remembered
  per key within its TTL, with what it may repeat as: a state-changing request's token is accepted
  once, a read's token again only on the same method and route (a client may repeat a read, but
  never turn a read's signature into a cancel);
- **rate limits** per API key and per client IP, where a route costs its ``RouteRule.weight``;
- a rate limit per client IP on public (unsigned) routes;
- **temporary lockout**: ``lockout_failures`` failed authentications from one IP within
  ``lockout_window_s`` lock that IP out for ``lockout_s``. Only the IP: the key's owner, calling
  from anywhere else, is not affected.

What they share is here too: :class:`Policy`, the configured limits parsed once and the
``RateLimited`` a limit hit raises, and :class:`Lockouts`, one process's view of locked-out IPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, Protocol

import limits

from keyplane.auth.errors import RateLimited
from keyplane.auth.routes import RouteRule
from keyplane.settings import Settings


class Admission(NamedTuple):
    """Rate-limit state for response headers; ``None`` fields mean "not tracked".

    A named tuple rather than a frozen dataclass: one is made per signed request, and a frozen
    dataclass's ``__init__`` costs several times as much."""

    limit: int | None = None
    used: int | None = None
    reset_s: int | None = None


class RequestGate(Protocol):
    # True when the gate answers from memory: the pipeline then calls :meth:`admit_now` and spares
    # the request a coroutine. A gate that does I/O (Redis) sets it False and is awaited instead.
    in_process: bool
    # Epoch seconds: a request signed before this can't be checked against the replay tokens seen
    # before this process started, so the pipeline refuses it where a replay check applies.
    replay_since_s: float

    def admit_now(
        self,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        """:meth:`admit`, synchronously, for a caller that has just checked :meth:`locked_out`; only
        called when ``in_process`` is True."""
        ...

    async def admit(
        self,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        """Admit the request or raise: a replayed token (ReplayDetected), a limit hit (RateLimited),
        or a dependency down (AuthUnavailable). ``replay_token`` is None when no replay check applies.
        A token is accepted once, or, with ``repeatable_as``, again only with the same value of it
        (a read repeated on its own route), never after a use with another."""
        ...

    async def admit_public(self, client_ip: str, rule: RouteRule) -> Admission:
        """Count an unsigned request against the per-IP public limit, or raise RateLimited."""
        ...

    def locked_out(self, client_ip: str) -> float:
        """Seconds left on this IP's lockout for repeated auth failures; 0 if none."""
        ...

    def note_failure(self, client_ip: str) -> None:
        """Count one failed authentication from this IP towards a lockout."""
        ...


MAX_TRACKED = 100_000  # bound on replay tokens / lockouts held in memory


class Policy:
    """The configured limits, parsed once."""

    def __init__(self, settings: Settings) -> None:
        self.per_key = limits.parse(settings.rate_limit_per_key)
        self.per_ip = limits.parse(settings.rate_limit_per_ip)
        self.public_ip = limits.parse(settings.rate_limit_public_per_ip)
        self.failures = limits.RateLimitItemPerSecond(settings.lockout_failures, settings.lockout_window_s)
        self.lockout_s = settings.lockout_s

    def admission(self, used: int, reset_s: float) -> Admission:
        return Admission(limit=self.per_key.amount, used=used, reset_s=max(0, math.ceil(reset_s)))

    @staticmethod
    def rejection(item: limits.RateLimitItem, used: int, reset_s: float, rule: RouteRule, what: str) -> RateLimited:
        reset = max(1, math.ceil(reset_s))
        if rule.dialect == "binance":
            headers = {"X-MBX-USED-WEIGHT-1M": str(used)}
        else:
            headers = {
                "RateLimit-Limit": str(item.amount),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(reset),
            }
        return RateLimited(
            f"Too much request weight used {what}: limit {item.amount} per {item.get_expiry()} s; "
            f"retry after {reset} s",
            reset_s,
            headers,
        )


class Lockouts:
    """This process's view of locked-out IPs (monotonic deadlines)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._until: dict[str, float] = {}
        self._clock = clock

    def left(self, ip: str) -> float:
        until = self._until.get(ip)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._until[ip]
            return 0.0
        return left

    def lock(self, ip: str, seconds: float) -> None:
        if len(self._until) >= MAX_TRACKED:
            now = self._clock()
            self._until = {k: v for k, v in self._until.items() if v > now}
        self._until[ip] = self._clock() + seconds
