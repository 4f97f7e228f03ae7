"""Turn ccxt exceptions into the SDK's exceptions, using keyplane's ``reason`` when there is one.

ccxt folds several keyplane rejections into one class (and raises ``DDoSProtection`` for -2015
once a key has authenticated successfully before), so the ``reason`` field of the response body,
which ccxt keeps in the exception message, decides.

ccxt's message is the exchange id and the raw response body (``binance {"code": -1002, ...}``);
the translated exception says what the server said instead: ``<reason or code>: <msg>``, the
same form as the SDK's own errors. Every holder command reports ccxt errors through
``translate``, so this is the one place that wording is decided.
"""

from __future__ import annotations

import json
import re
from typing import Any

from keyplane.client.errors import ClientError, ExchangeUnreachable, error_for
from keyplane.client.redact import redact

_BODY = re.compile(r"\{.*\}", re.S)


def _body(exc: BaseException) -> dict[str, Any]:
    m = _BODY.search(str(exc))
    if not m:
        return {}
    try:
        body = json.loads(m.group(0))
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def reason_of(exc: BaseException) -> tuple[str | None, int | None]:
    """(keyplane reason, Binance code) found in a ccxt exception message, if any."""
    body = _body(exc)
    reason = body.get("reason") or body.get("error")
    code = body.get("code")
    return (reason if isinstance(reason, str) else None), (code if isinstance(code, int) else None)


def server_message(exc: BaseException) -> str:
    """What the server said, on one line: ``<reason or code>: <msg>`` when the exception carries
    the server's error body (Binance's ``{"code", "msg"}``, keyplane's ``reason``, the native
    ``{"error", "message"}``); otherwise ccxt's own message. Redacted, at most 300 characters."""
    body = _body(exc)
    msg = body.get("msg") or body.get("message")
    if isinstance(msg, str) and msg.strip():
        reason, code = reason_of(exc)
        head = reason or (str(code) if code is not None else None)
        text = f"{head}: {msg}" if head else msg
    else:
        text = str(exc)
    return redact(" ".join(text.split()))[:300]


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
    message = server_message(exc)
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
    statuses = (
        (ccxt.DDoSProtection | ccxt.RateLimitExceeded, 429),
        (ccxt.PermissionDenied, 403),
        (ccxt.AuthenticationError, 401),
        (ccxt.OperationFailed, 503),
        (ccxt.ExchangeError, 400),
    )
    status = next((status for cls, status in statuses if isinstance(exc, cls)), None)
    return error_for(reason, message, status=status, code=code, retry_after_s=retry_after(exchange))
