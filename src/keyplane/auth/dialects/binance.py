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

_SIG = b"signature="
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(slots=True)
class BinanceRequest:
    params: dict[str, str]
    payload: bytes
    signature: str  # as received: hex for HMAC, percent-encoded base64 for Ed25519
    timestamp_ms: float
    recv_window_ms: float


def _split(raw: bytes) -> tuple[list[bytes], list[bytes]]:
    """(segments without signature, signature values)"""
    if not raw:
        return [], []
    keep, sigs = [], []
    for seg in raw.split(b"&"):
        if seg.startswith(_SIG):
            sigs.append(seg[len(_SIG) :])
        elif seg:
            keep.append(seg)
    return keep, sigs


def _collect(segments: list[bytes], params: dict[str, str]) -> None:
    for seg in segments:
        key_b, _, value_b = seg.partition(b"=")
        try:
            key = unquote_plus(key_b.decode("ascii"))
            value = unquote_plus(value_b.decode("ascii"), errors="strict")
        except UnicodeDecodeError as e:
            raise ParamInvalid("parameters must be percent-encoded ASCII") from e
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
    q_keep, q_sigs = _split(raw_query)
    b_keep, b_sigs = _split(raw_body)
    sigs = q_sigs + b_sigs
    if not sigs:
        raise SignatureMissing("mandatory parameter 'signature' was not sent")
    if len(sigs) > 1:
        raise DuplicateParameter("duplicate values for parameter 'signature' (each parameter may appear once)")
    params: dict[str, str] = {}
    _collect(q_keep, params)
    _collect(b_keep, params)
    payload = b"&".join(q_keep) + b"&".join(b_keep)

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
    try:
        sig_text = sigs[0].decode("ascii")
    except UnicodeDecodeError as e:
        raise SignatureEncoding("the signature is not ASCII") from e
    return BinanceRequest(params, payload, sig_text, timestamp_ms, recv_window)


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
