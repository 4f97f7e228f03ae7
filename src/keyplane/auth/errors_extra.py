"""Rejections raised by the request gate (replay guard, rate limits, lockout)."""

from __future__ import annotations

import math

from keyplane.auth.errors import AuthError


class ReplayDetected(AuthError):
    code = "replayed"
    binance_code = -1022


class RateLimited(AuthError):
    code = "rate_limited"
    status = 429
    binance_code = -1003
    counts_as_failure = False

    def __init__(self, message: str, retry_after_s: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s))), **(headers or {})}


class IpLockedOut(AuthError):
    code = "ip_locked_out"
    status = 429
    binance_code = -1003
    counts_as_failure = False

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(
            f"too many failed authentications from this IP: locked out for {max(1, math.ceil(retry_after_s))} s"
        )
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
