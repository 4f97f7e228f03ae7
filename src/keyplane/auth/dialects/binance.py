"""The Binance dialect, as sent by ccxt's binance class, python-binance and freqtrade.

The key is in ``X-MBX-APIKEY``. ``timestamp``, ``recvWindow`` and ``signature`` travel in the query
string or in a form body. The signed payload is the raw query string followed by the raw body,
exactly as received and with no separator, minus the ``signature`` parameter wherever it is.

Pure parsing: no cache, no database, no clock. :func:`parse` never decodes more than it must.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from urllib.parse import unquote_plus, unquote_to_bytes

from keyplane.auth.errors import (
    DuplicateParameter,
    ParamInvalid,
    ParamMissing,
    RecvWindowInvalid,
    SignatureEncoding,
    SignatureMissing,
)

_SIG = "signature="
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)
class BinanceRequest:
    params: dict[str, str]
    payload: bytes
    signature: str  # as received: hex for HMAC, percent-encoded base64 for Ed25519
    timestamp_ms: float
    recv_window_ms: float


def _split(raw: str) -> tuple[str, list[str]]:
    """(the string without its ``signature`` parameter(s), the signature values)"""
    sigs: list[str] = []
    start = 0
    while True:
        idx = raw.find(_SIG, start)
        if idx < 0:
            return raw, sigs
        if idx > 0 and raw[idx - 1] != "&":  # part of another parameter, e.g. "xsignature="
            start = idx + 1
            continue
        end = raw.find("&", idx)
        sigs.append(raw[idx + len(_SIG) : end if end >= 0 else len(raw)])
        # Drop the segment and one adjoining "&", so the rest is exactly what was signed.
        raw = raw[:idx] + raw[end + 1 :] if end >= 0 else raw[: max(idx - 1, 0)]
        start = idx


def _collect(raw: str, params: dict[str, str]) -> None:
    if not raw:
        return
    plain = "%" not in raw and "+" not in raw  # the usual case: nothing to decode
    for seg in raw.split("&"):
        if not seg:
            continue
        key, _, value = seg.partition("=")
        if not plain and ("%" in seg or "+" in seg):
            try:
                key = unquote_plus(key, errors="strict")
                value = unquote_plus(value, errors="strict")
            except UnicodeDecodeError as e:
                raise ParamInvalid("parameters must be percent-encoded UTF-8") from e
        if key in params:
            raise DuplicateParameter(f"duplicate values for parameter {key!r} (each parameter may appear once)")
        params[key] = value


def _number(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError as e:
        raise ParamInvalid(f"parameter {name!r} must be a number, got {value[:32]!r}") from e
    if not math.isfinite(number):
        raise ParamInvalid(f"parameter {name!r} must be a finite number")
    return number


def parse(raw_query: bytes, raw_body: bytes, *, recv_window_default: int, recv_window_max: int) -> BinanceRequest:
    """Split a request into its parameters, the exact signed payload and the signature."""
    try:
        query, body = raw_query.decode("ascii"), raw_body.decode("ascii")
    except UnicodeDecodeError as e:
        raise ParamInvalid("parameters must be percent-encoded ASCII (Binance signs the bytes as sent)") from e
    q_keep, q_sigs = _split(query)
    b_keep, b_sigs = _split(body) if body else ("", [])
    sigs = q_sigs + b_sigs
    if not sigs:
        raise SignatureMissing("mandatory parameter 'signature' was not sent")
    if len(sigs) > 1:
        raise DuplicateParameter("duplicate values for parameter 'signature' (each parameter may appear once)")
    params: dict[str, str] = {}
    _collect(q_keep, params)
    _collect(b_keep, params)
    payload = (q_keep + b_keep).encode("ascii")

    ts_text = params.get("timestamp")
    if ts_text is None:
        raise ParamMissing("mandatory parameter 'timestamp' was not sent")
    if not ts_text.isdigit():
        raise ParamInvalid(f"parameter 'timestamp' must be milliseconds since the epoch, got {ts_text[:32]!r}")
    ts = int(ts_text)
    # Binance accepts microseconds too: 16 digits.
    timestamp_ms = ts / 1000 if ts >= 10**15 else float(ts)

    rw_text = params.get("recvWindow")
    if rw_text is None:
        recv_window = float(recv_window_default)
    else:
        try:
            recv_window = _number(rw_text, "recvWindow")
        except ParamInvalid as e:
            raise RecvWindowInvalid(f"recvWindow must be a number of milliseconds, got {rw_text[:32]!r}") from e
        if not 0 < recv_window <= recv_window_max:
            raise RecvWindowInvalid(f"recvWindow must be more than 0 and at most {recv_window_max}, got {rw_text}")
    return BinanceRequest(params, payload, sigs[0], timestamp_ms, recv_window)


def decode_hex(signature: str) -> str:
    if len(signature) != 64 or not _HEX.issuperset(signature):
        raise SignatureEncoding(
            f"an HMAC-SHA256 signature is 64 hex characters; got {len(signature)} characters"
            + ("" if _HEX.issuperset(signature) else " that are not all hex")
        )
    return signature


def decode_base64(signature: str) -> bytes:
    """Percent-decode, then base64-decode (standard or URL-safe alphabet)."""
    text = unquote_to_bytes(signature).replace(b" ", b"+")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as e:
            raise SignatureEncoding("an Ed25519 signature is base64, percent-encoded; this does not decode") from e
    if len(raw) != 64:
        raise SignatureEncoding(f"an Ed25519 signature is 64 bytes; this one decodes to {len(raw)}")
    return raw
