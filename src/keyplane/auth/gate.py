"""The replay guard and rate limits, behind one call.

The pipeline asks the gate once per signed request, after the signature is verified. A gate backed
by Redis answers the replay check and every rate limit in a single round trip; the in-process gate
answers from memory (both in ``auth/gates.py``). :class:`OpenGate` admits everything (tests of
other stages, benchmarks).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from keyplane.auth.routes import RouteRule


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
        *,
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


_UNTRACKED = Admission()


class OpenGate:
    in_process = True
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
        return _UNTRACKED

    async def admit(
        self,
        *,
        key_id: str,
        client_ip: str,
        rule: RouteRule,
        replay_token: str | None,
        replay_ttl_s: float,
        repeatable_as: str | None = None,
    ) -> Admission:
        return _UNTRACKED

    async def admit_public(self, client_ip: str, rule: RouteRule) -> Admission:
        return _UNTRACKED

    def locked_out(self, client_ip: str) -> float:
        return 0.0

    def note_failure(self, client_ip: str) -> None:
        return None
