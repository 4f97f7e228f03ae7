"""Throttling of login and TOTP attempts, per account and per client IP, with the ``limits`` library.

Only failures are counted (a person who types the right password is never slowed down), but every
attempt is checked first, so a locked-out account cannot be tried at all until its window moves on.
Storage is in-process memory, or Redis when ``KEYPLANE_REDIS_URL`` is set so every node shares the
counters. Redis down means fail closed: the attempt is refused with ServiceUnavailable.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from keyplane.accounts.errors import Throttled
from keyplane.errors import ServiceUnavailable
from keyplane.settings import Settings


@dataclass(frozen=True, slots=True)
class Rule:
    name: str  # "login" or "totp": the words in the error message
    per_user: RateLimitItem
    per_ip: RateLimitItem


def make_storage(settings: Settings) -> Storage:
    if settings.redis_url:
        storage = storage_from_string(
            settings.redis_url, key_prefix=f"{settings.redis_prefix}limits", wrap_exceptions=True
        )
        assert isinstance(storage, Storage)  # a sync URL scheme gives a sync storage
        return storage
    return MemoryStorage()


class AttemptThrottle:
    def __init__(self, settings: Settings, storage: Storage | None = None) -> None:
        self.limiter = SlidingWindowCounterRateLimiter(storage or make_storage(settings))
        self.login = Rule("login", parse(settings.login_limit_per_user), parse(settings.login_limit_per_ip))
        self.totp = Rule("code", parse(settings.totp_limit_per_user), parse(settings.totp_limit_per_ip))

    def _targets(self, rule: Rule, user: str, ip: str | None) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        targets: list[tuple[RateLimitItem, tuple[str, ...]]] = [(rule.per_user, (rule.name, "user", user))]
        if ip:
            targets.append((rule.per_ip, (rule.name, "ip", ip)))
        return targets

    def check(self, rule: Rule, user: str, ip: str | None, field: str | None = None) -> None:
        """Raise Throttled if the account or the IP has used up its failed attempts."""
        try:
            for item, ids in self._targets(rule, user, ip):
                if not self.limiter.test(item, *ids):
                    reset = self.limiter.get_window_stats(item, *ids).reset_time
                    raise Throttled(rule.name, max(1, math.ceil(reset - time.time())), field=field)
        except StorageError as e:
            raise ServiceUnavailable("the rate-limit store is unavailable") from e

    def failed(self, rule: Rule, user: str, ip: str | None) -> None:
        """Count one failed attempt against the account and the IP."""
        try:
            for item, ids in self._targets(rule, user, ip):
                self.limiter.hit(item, *ids)
        except StorageError as e:
            raise ServiceUnavailable("the rate-limit store is unavailable") from e
