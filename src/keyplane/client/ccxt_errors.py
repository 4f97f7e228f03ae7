"""Turn ccxt exceptions into the SDK's exceptions, using keyplane's ``reason`` when there is one.

ccxt folds several keyplane rejections into one class (and raises ``DDoSProtection`` for -2015
once a key has authenticated successfully before), so the ``reason`` field of the response body,
which ccxt keeps in the exception message, decides.
"""

from __future__ import annotations

import json
import re
from typing import Any

from keyplane.client.errors import (
    ApiError,
    ClientError,
    ExchangeUnreachable,
    error_for,
)
from keyplane.client.redact import redact

_BODY = re.compile(r"\{.*\}", re.S)


def reason_of(exc: BaseException) -> tuple[str | None, int | None]:
    """(keyplane reason, Binance code) found in a ccxt exception message, if any."""
    m = _BODY.search(str(exc))
    if not m:
        return None, None
    try:
        body = json.loads(m.group(0))
    except ValueError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    reason = body.get("reason") or body.get("error")
    code = body.get("code")
    return (reason if isinstance(reason, str) else None), (code if isinstance(code, int) else None)


def retry_after(exchange: Any, default: float = 1.0) -> float:
    headers = getattr(exchange, "last_response_headers", None) or {}
    for name, value in dict(headers).items():
        if str(name).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return default
    return default


def translate(exc: BaseException, exchange: Any = None) -> ClientError:
    """The SDK exception for a ccxt exception (the message is redacted and kept to one line)."""
    import ccxt

    if isinstance(exc, ClientError):
        return exc
    reason, code = reason_of(exc)
    message = redact(" ".join(str(exc).split()))[:300]
    if isinstance(exc, ccxt.DDoSProtection) and reason is None and code == -2015:
        reason = "key_unknown"
    if isinstance(exc, ccxt.InvalidNonce) and reason is None:
        reason = "timestamp_outside_window"
    if (
        reason is None
        and isinstance(exc, ccxt.NetworkError)
        and not isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded)
    ):
        return ExchangeUnreachable(f"exchange unreachable: {message}")
    status: int | None = None
    if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        status = 429
    elif isinstance(exc, ccxt.PermissionDenied):
        status = 403
    elif isinstance(exc, ccxt.AuthenticationError):
        status = 401
    elif isinstance(exc, ccxt.OperationFailed):
        status = 503
    elif isinstance(exc, ccxt.ExchangeError):
        status = 400
    wait = retry_after(exchange) if exchange is not None else 1.0
    err: ApiError = error_for(reason, message, status=status, code=code, retry_after_s=wait)
    return err
