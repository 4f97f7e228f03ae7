"""Step-up: the proof that a person passed a fresh second-factor check, which every widening asks for.

A :class:`StepUp` names the user who proved it, when, and how (``totp``, ``recovery`` or
``operator``; an operator's proof names no user: the operator acts for every account). Services
that widen what a key or an account can do (a new key or credential, a key that can trade or
withdraw, wider scopes, IPs or limits, enabling a disabled key, changing the withdrawal address
allowlist, new recovery codes) take one and call :func:`require_step_up`, which raises
StepUpRequired unless the proof is of the same user and at most :data:`STEP_UP_MAX_AGE` old.

A boolean could be asserted by any caller; a StepUp cannot be conjured. Its constructor refuses
every caller that does not hold this module's private token, so there are exactly two ways to get one:

- ``TwoFactorService.verify`` (accounts/twofactor.py) returns one after a code passed;
- :meth:`StepUp.operator`, for the operator CLI, which is trusted by whoever can run it on the
  server. Its name says what it is at every call site, and services audit ``how``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import InitVar, dataclass
from typing import Literal

from keyplane.accounts.errors import StepUpRequired

# How long a verified code stands in for a widening. Short: the proof is meant for the change the
# person is making now, not for a session's worth of changes.
STEP_UP_MAX_AGE = dt.timedelta(minutes=5)
# A proof from a little ahead of this process's clock (another node's) still counts.
_CLOCK_SKEW = dt.timedelta(seconds=30)

StepUpMethod = Literal["totp", "recovery", "operator"]

_MINT = object()


@dataclass(frozen=True, slots=True)
class StepUp:
    user_id: int | None  # None: the operator's proof, good for any account
    verified_at: dt.datetime
    how: StepUpMethod
    mint: InitVar[object]

    def __post_init__(self, mint: object) -> None:
        if mint is not _MINT:
            raise TypeError("a StepUp is made only by the 2FA verifier (or StepUp.operator for the CLI)")

    @classmethod
    def operator(cls, *, now: dt.datetime | None = None) -> StepUp:
        """The operator's proof: ``keyplane admin`` acts with the server's own authority over every
        account, so no code is asked for. Use it only in the operator CLI (and in-process tools
        the operator runs); services audit ``how``, so its use is on record."""
        return cls(None, now or dt.datetime.now(dt.UTC), "operator", _MINT)

    @classmethod
    def _from_verified_code(cls, user_id: int, how: Literal["totp", "recovery"], now: dt.datetime) -> StepUp:
        # For TwoFactorService.verify only, once the code has passed and been spent.
        return cls(user_id, now, how, _MINT)

    def __repr__(self) -> str:
        return f"StepUp(user_id={self.user_id}, how={self.how!r}, verified_at={self.verified_at.isoformat()})"


def is_fresh(proof: object, user_id: int, *, now: dt.datetime | None = None) -> bool:
    """Whether ``proof`` is a StepUp of ``user_id`` (or the operator's) verified at most
    STEP_UP_MAX_AGE before ``now``."""
    if not isinstance(proof, StepUp):
        return False
    if proof.user_id != user_id and not (proof.how == "operator" and proof.user_id is None):
        return False
    now = now or dt.datetime.now(dt.UTC)
    return now - STEP_UP_MAX_AGE <= proof.verified_at <= now + _CLOCK_SKEW


def require_step_up(
    proof: StepUp | None,
    user_id: int,
    *,
    reasons: Sequence[str] = (),
    message: str = "",
    now: dt.datetime | None = None,
) -> StepUp:
    """Return ``proof`` if it is fresh and of ``user_id``; raise StepUpRequired (naming ``reasons``,
    or with ``message``) if it is missing, stale or another user's."""
    if proof is None or not is_fresh(proof, user_id, now=now):
        raise StepUpRequired(reasons, message)
    return proof
