"""The Binance dialect, as sent by ccxt's binance class, python-binance and freqtrade.

The key is in ``X-MBX-APIKEY``. ``timestamp``, ``recvWindow`` and ``signature`` travel in the query
string or in a form body. The signed payload is the raw query string followed by the raw body,
exactly as received and with no separator, minus the ``signature`` parameter wherever it is.

Pure parsing: no cache, no database, no clock. :func:`parse` never decodes more than it must.
"""

from __future__ import annotations

import binascii
import math
from typing import NamedTuple
from urllib.parse import unquote_plus

from keyplane.auth.errors import (
    DuplicateParameter,
    ParamInvalid,
    ParamMissing,
    RecvWindowInvalid,
    SignatureEncoding,
    SignatureMissing,
)
from keyplane.auth.request import SignedRequest

_SIG = "signature="
_STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})
_HEX = frozenset("0123456789abcdefABCDEF")


class BinanceRequest(NamedTuple):
    params: dict[str, str]
    payload: bytes
    signature: str  # as received: hex for HMAC, percent-encoded base64 for Ed25519
    timestamp_ms: float
    recv_window_ms: float

    @property
    def not_after_s(self) -> float:
        """Epoch seconds after which the client no longer expects the request to take effect."""
        return (self.timestamp_ms + self.recv_window_ms) / 1000.0


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


_SIG_LAST = "&signature="


def _general(query: str, body: str) -> tuple[dict[str, str], str, str]:
    """Any request :func:`parse`'s fast path does not take: (params, payload, signature)."""
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
    return params, q_keep + b_keep, sigs[0]


def _timestamp(text: str | None) -> float:
    if text is None:
        raise ParamMissing("mandatory parameter 'timestamp' was not sent")
    if not (text.isascii() and text.isdigit()):
        raise ParamInvalid(f"parameter 'timestamp' must be milliseconds since the epoch, got {text[:32]!r}")
    ts = int(text) if len(text) <= 19 else 10**19  # past any int64: far outside every window, all the same
    return ts / 1000 if ts >= 10**15 else ts  # Binance accepts microseconds too: 16 digits


def _recv_window(text: str, maximum: int) -> float:
    try:
        value = _number(text, "recvWindow")
    except ParamInvalid as e:
        raise RecvWindowInvalid(f"recvWindow must be a number of milliseconds, got {text[:32]!r}") from e
    if not 0 < value <= maximum:
        raise RecvWindowInvalid(f"recvWindow must be more than 0 and at most {maximum}, got {text}")
    return value


def split_fast(raw_query: bytes, raw_body: bytes) -> tuple[dict[str, str], bytes, str] | None:
    """(params, signed payload, signature) for the shape nearly every client sends, or None.

    That shape: the signature last in the body (or, with no body, in the query), once; every other
    parameter ``name=value``, once; nothing percent-encoded. For such a request the result is exactly
    what the general parser finds (a property test holds the two together); for anything else this
    returns None and :func:`parse` takes the general path, which decodes, and rejects what it must.
    """
    try:
        query = raw_query.decode("ascii") if raw_query else ""
        body = raw_body.decode("ascii") if raw_body else ""
    except UnicodeDecodeError:
        return None
    head, found, signature = (body or query).rpartition(_SIG_LAST)
    if not found or "&" in signature or _SIG in head:
        return None
    if not body:
        flat, signed = head, raw_query[: len(head)]
    elif not query:
        flat, signed = head, raw_body[: len(head)]
    elif _SIG in query:
        return None
    else:  # query and body are signed back to back, but are separate lists of parameters
        flat, signed = f"{query}&{head}", raw_query + raw_body[: len(head)]
    if "%" in flat or "+" in flat:  # percent-encoding: the general path decodes it
        return None
    # Each parameter once, with exactly one "=": anything else (an empty or bare parameter, a value
    # with "=", a duplicate) is for the general path to read or to reject with its precise error.
    params: dict[str, str] = {}
    for part in flat.split("&"):
        name, eq, value = part.partition("=")
        if not eq or "=" in value or name in params:
            return None
        params[name] = value
    return params, signed, signature


def parse(raw_query: bytes, raw_body: bytes, recv_window_default: int, recv_window_max: int) -> BinanceRequest:
    """Split a request into its parameters, the exact signed payload and the signature, and read
    its timestamp and recvWindow."""
    fast = split_fast(raw_query, raw_body)
    if fast is None:
        try:
            query, body = raw_query.decode("ascii"), raw_body.decode("ascii")
        except UnicodeDecodeError as e:
            raise ParamInvalid("parameters must be percent-encoded ASCII (Binance signs the bytes as sent)") from e
        params, payload, signature = _general(query, body)
        signed = payload.encode("ascii")
    else:
        params, signed, signature = fast
    rw_text = params.get("recvWindow")
    return BinanceRequest(
        params,
        signed,
        signature,
        _timestamp(params.get("timestamp")),
        recv_window_default if rw_text is None else _recv_window(rw_text, recv_window_max),
    )


def read(
    method: str,
    raw_query: bytes,
    raw_body: bytes,
    api_key_header: str | None,
    recv_window_default: int,
    recv_window_max: int,
    future_ms: int,
) -> SignedRequest:
    """The request as the pipeline checks it: the signed payload, the signature decoded by its
    shape (64 hex characters: HMAC-SHA256; base64: Ed25519), the replay token named by its bytes,
    and the window in which it is accepted (``timestamp - 1000 ms < now <= timestamp + recvWindow``)."""
    params, payload, text, timestamp_ms, recv_window_ms = parse(
        raw_query, raw_body, recv_window_default, recv_window_max
    )
    signature, algorithm = _decode(text)
    signed_at = timestamp_ms / 1000.0
    return SignedRequest(
        "binance",
        api_key_header,
        payload,
        signature,
        algorithm,
        signature.hex(),
        method in _STATE_CHANGING,
        signed_at,
        signed_at - future_ms / 1000.0,
        signed_at + recv_window_ms / 1000.0,
        params,
        None,
        text,
    )


def _decode(text: str) -> tuple[bytes, str | None]:
    """(the signature's bytes, the key type its encoding is for), or (b"", None) if neither decodes."""
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) == 32:  # fromhex skips spaces: a 64-character string with any is short here
            return raw, "hmac"
    try:
        return decode_base64(text), "ed25519"
    except SignatureEncoding:
        return b"", None


def reject_encoding(text: str, key_type: str) -> None:
    """Raise the precise :class:`SignatureEncoding` for a signature not encoded for ``key_type``."""
    if key_type == "hmac":
        decode_hex(text)
    else:
        decode_base64(text)
    raise SignatureEncoding(f"this signature is not encoded for an {key_type} key")


def decode_hex(signature: str) -> bytes:
    """The 32 bytes of a hex HMAC-SHA256 signature (either case)."""
    try:
        raw = bytes.fromhex(signature) if len(signature) == 64 else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:  # fromhex skips spaces: a 64-character string with any is short here
        raise SignatureEncoding(
            f"an HMAC-SHA256 signature is 64 hex characters; got {len(signature)} characters"
            + ("" if _HEX.issuperset(signature) else " that are not all hex")
        )
    return raw


# The only percent-escapes an Ed25519 signature needs: base64's "+", "/" and "=" (either hex case).
_B64_ESCAPES = (("%2B", "+"), ("%2b", "+"), ("%2F", "/"), ("%2f", "/"), ("%3D", "="), ("%3d", "="))


def decode_base64(signature: str) -> bytes:
    """The 64 bytes of an Ed25519 signature as Binance documents it: standard base64 with its
    padding, then percent-encoded.

    Exactly one spelling of each signature is accepted, up to percent-encoding (which a client may
    apply to "/" and "=" or not, in either hex case): no URL-safe alphabet, no missing padding, no
    non-zero unused bits in the last character, no raw "+" (which a form decoder reads as a space).
    The replay guard keys on the decoded bytes in any case, so a respelling is never a new request.
    """
    if "+" in signature:
        raise SignatureEncoding(
            "an Ed25519 signature's '+' must be percent-encoded as %2B (a raw '+' reads as a space)"
        )
    text = signature
    if "%" in text:
        for escape, char in _B64_ESCAPES:
            text = text.replace(escape, char)
        if "%" in text:
            raise SignatureEncoding("an Ed25519 signature is base64: only '+', '/' and '=' may be percent-encoded")
    try:
        raw = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureEncoding(
            "an Ed25519 signature is standard base64 with its padding, percent-encoded; this does not decode"
        ) from e
    if len(raw) != 64:
        raise SignatureEncoding(f"an Ed25519 signature is 64 bytes; this one decodes to {len(raw)}")
    if binascii.b2a_base64(raw, newline=False) != text.encode("ascii"):
        raise SignatureEncoding("an Ed25519 signature must be the canonical base64 of its 64 bytes")
    return raw


def read_ws(
    params: dict[str, str], state_changing: bool, recv_window_default: int, recv_window_max: int, future_ms: int
) -> SignedRequest:
    """A WebSocket API request (``/ws-api/v3``) as the pipeline checks it, like :func:`read` for
    REST. Its parameters are a JSON object, each value as the client spelled it; ``apiKey`` names
    the key and the signed payload is every parameter but ``signature``, sorted by name, as
    ``name=value`` joined by ``&`` (Binance's WebSocket API rule). An Ed25519 signature comes in
    plain base64 here: its "+" is not a form's space."""
    text = params.get("signature")
    if text is None:
        raise SignatureMissing("mandatory parameter 'signature' was not sent")
    rest = {k: v for k, v in params.items() if k != "signature"}
    payload = "&".join(f"{k}={rest[k]}" for k in sorted(rest)).encode("utf-8")
    signature, algorithm = _decode(text if len(text) == 64 else text.replace("+", "%2B"))
    rw_text = rest.get("recvWindow")
    recv_window_ms = recv_window_default if rw_text is None else _recv_window(rw_text, recv_window_max)
    signed_at = _timestamp(rest.get("timestamp")) / 1000.0
    return SignedRequest(
        "binance",
        rest.get("apiKey"),
        payload,
        signature,
        algorithm,
        signature.hex(),
        state_changing,
        signed_at,
        signed_at - future_ms / 1000.0,
        signed_at + recv_window_ms / 1000.0,
        rest,
        None,
        text,
    )
