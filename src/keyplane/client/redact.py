"""Keep credentials out of logs.

``RedactingFilter`` is a ``logging.Filter`` that rewrites each record's message before any handler
formats it:

- keyplane API keys (``kp_live_...``/``kp_test_...``) are cut to their prefix plus four characters;
- keyplane secrets (``kps_...``), PEM private keys, ``signature=...`` query parameters, RFC 9421
  ``Signature:`` headers and ``X-MBX-APIKEY`` values are dropped;
- any value registered with ``add_secret`` (a secret of another exchange, which has no recognisable
  shape) is replaced wherever it appears.

ccxt's ``verbose`` mode prints the key and the signed URL to stdout, not through logging, so the
apps never turn it on.
"""

from __future__ import annotations

import logging
import re
import threading

_KEY = re.compile(r"\b(kp_(?:live|test)_)([A-Za-z0-9]{4})[A-Za-z0-9]*…?")
_SECRET = re.compile(r"\bkps_[A-Za-z0-9]+")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
_SIGNATURE_PARAM = re.compile(r"(?i)(signature=)[^&\s'\"]+")
_SIGNATURE_HEADER = re.compile(r"(?i)(\bsignature\s*[:=]\s*)[^\r\n,'\"}]+")
_APIKEY_HEADER = re.compile(r"(?i)(x-mbx-apikey['\"]?\s*[:=]\s*['\"]?)([^\s'\",}]+)")

REDACTED = "[redacted]"


def mask_key(api_key: str | None) -> str:
    """A key as it may be shown: its prefix and four characters, e.g. ``kp_live_AbCd…``."""
    if not api_key:
        return ""
    m = _KEY.match(api_key)
    if m:
        return m.group(1) + m.group(2) + "…"
    return api_key[:4] + "…" if len(api_key) > 8 else "…"


def redact(text: str, secrets: frozenset[str] = frozenset()) -> str:
    """``text`` with every credential pattern (and every value in ``secrets``) removed."""
    for value in secrets:
        if value:
            text = text.replace(value, REDACTED)
    text = _PEM.sub(REDACTED, text)
    text = _SECRET.sub(REDACTED, text)
    text = _SIGNATURE_PARAM.sub(r"\1" + REDACTED, text)
    text = _SIGNATURE_HEADER.sub(r"\1" + REDACTED, text)
    text = _APIKEY_HEADER.sub(lambda m: m.group(1) + mask_key(m.group(2)), text)
    return _KEY.sub(lambda m: m.group(1) + m.group(2) + "…", text)


class RedactingFilter(logging.Filter):
    """Attach to a handler (or a logger) to redact every record that passes through it."""

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()

    def add_secret(self, value: str | None) -> None:
        """Redact ``value`` wherever it appears (values shorter than 6 characters are ignored, as
        masking them would garble ordinary text)."""
        if value and len(value) >= 6:
            with self._lock:
                self._secrets = self._secrets | {value}

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep only the template
            message = str(record.msg)
        record.msg = redact(message, self._secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Format the traceback now, redacted, so no handler formats the raw one.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self._secrets)
            record.exc_info = None
        return True


_installed: RedactingFilter | None = None


def install(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one shared filter to every handler of ``logger`` (default: the root logger) and return it."""
    global _installed
    if _installed is None:
        _installed = RedactingFilter()
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if _installed not in handler.filters:
            handler.addFilter(_installed)
    if _installed not in target.filters:
        target.addFilter(_installed)
    return _installed
