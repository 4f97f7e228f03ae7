from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from keyplane.auth import errors as E
from keyplane.auth.dialects import binance
from keyplane.keys.record import Ed25519Verifier, HmacVerifier

KW = {"recv_window_default": 5000, "recv_window_max": 60000}


def test_payload_is_query_then_body_without_signature():
    req = binance.parse(b"symbol=BTCUSDT&timestamp=1", b"quantity=1&signature=ab&price=2", **KW)
    assert req.payload == b"symbol=BTCUSDT&timestamp=1quantity=1&price=2"
    assert req.signature == "ab"
    assert req.params == {"symbol": "BTCUSDT", "timestamp": "1", "quantity": "1", "price": "2"}
    assert req.recv_window_ms == 5000


def test_signature_in_the_middle_of_the_query():
    req = binance.parse(b"a=1&signature=ff&timestamp=5&recvWindow=100.5", b"", **KW)
    assert req.payload == b"a=1&timestamp=5&recvWindow=100.5"
    assert req.recv_window_ms == 100.5


def test_microsecond_timestamps():
    assert binance.parse(b"timestamp=1795455864665123&signature=x", b"", **KW).timestamp_ms == pytest.approx(
        1795455864665.123
    )


@pytest.mark.parametrize(
    ("query", "error"),
    [
        (b"timestamp=1", E.SignatureMissing),
        (b"timestamp=1&signature=a&signature=b", E.DuplicateParameter),
        (b"timestamp=1&timestamp=2&signature=a", E.DuplicateParameter),
        (b"recvWindow=1&signature=a", E.ParamMissing),
        (b"timestamp=-1&signature=a", E.ParamInvalid),
        (b"timestamp=1e12&signature=a", E.ParamInvalid),
        (b"timestamp=1&recvWindow=x&signature=a", E.RecvWindowInvalid),
        (b"timestamp=1&recvWindow=60001&signature=a", E.RecvWindowInvalid),
        (b"timestamp=1&recvWindow=0&signature=a", E.RecvWindowInvalid),
        (b"timestamp=1&recvWindow=nan&signature=a", E.RecvWindowInvalid),
        (b"timestamp=1&x=%FF&signature=a", E.ParamInvalid),
    ],
)
def test_rejections(query, error):
    with pytest.raises(error) as info:
        binance.parse(query, b"", **KW)
    assert info.value.code == error.code


def test_decode_hex_and_base64():
    assert binance.decode_hex("A" * 64) == b"\xaa" * 32
    assert binance.decode_hex("ab" * 32) == b"\xab" * 32
    for bad in ("a" * 63, "g" * 64, "", "a" * 62 + " a", "a" * 66):
        with pytest.raises(E.SignatureEncoding):
            binance.decode_hex(bad)
    raw = bytes(range(64))
    assert binance.decode_base64(quote(base64.b64encode(raw).decode(), safe="")) == raw
    with pytest.raises(E.SignatureEncoding, match="64 bytes"):
        binance.decode_base64(base64.b64encode(b"short").decode())
    with pytest.raises(E.SignatureEncoding):
        binance.decode_base64("!!!!")


# A signature whose base64 has "+", "/" and "=" in it, so that every spelling question arises.
_RAW = bytes([0xFB, 0xEF, 0xFF] * 21 + [0xFB])
_STD = base64.b64encode(_RAW).decode()


@pytest.mark.parametrize(
    "spelling",
    [
        quote(_STD, safe=""),  # what ccxt, python-binance and requests send
        quote(_STD, safe="").replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d"),
        quote(_STD, safe="/"),  # an encoder that leaves "/" alone
        quote(_STD, safe="/="),
    ],
)
def test_base64_spellings_binance_documents_are_accepted(spelling):
    assert "+" in _STD and "/" in _STD and "=" in _STD
    assert binance.decode_base64(spelling) == _RAW


def _last_char_bits_changed(text: str) -> str:
    # 64 bytes leave 4 unused bits in the last character before "==": set one of them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = text[-3]
    return text[:-3] + alphabet[alphabet.index(last) ^ 1] + text[-2:]


@pytest.mark.parametrize(
    ("spelling", "why"),
    [
        (_STD, "raw '+'"),  # a form decoder reads it as a space
        (base64.urlsafe_b64encode(_RAW).decode(), "URL-safe alphabet"),
        (quote(_STD.rstrip("="), safe=""), "no padding"),
        (quote(_last_char_bits_changed(_STD), safe=""), "non-canonical last character"),
        (quote(_STD, safe="") + "%3D", "extra padding"),
        ("%41" + quote("A" + _STD[1:], safe="")[1:], "another character percent-encoded"),
        (quote(_STD, safe="").replace("%2B", " "), "a space"),
    ],
)
def test_other_base64_spellings_are_refused(spelling, why):
    with pytest.raises(E.SignatureEncoding):
        binance.decode_base64(spelling)


params = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=12).filter(
        lambda k: k not in ("signature", "timestamp", "recvWindow")
    ),
    st.text(max_size=30),
    max_size=6,
)


@given(params, st.booleans())
def test_hmac_signing_round_trip(extra, in_body):
    """What a Binance client signs is exactly what keyplane verifies, wherever the params travel."""
    secret = "kps_" + "x" * 46
    encoded = urlencode({**extra, "timestamp": 1795455864665})
    sig = hmac.new(secret.encode(), encoded.encode(), hashlib.sha256).hexdigest()
    signed = f"{encoded}&signature={sig}".encode()
    req = binance.parse(b"" if in_body else signed, signed if in_body else b"", **KW)
    assert HmacVerifier(secret.encode()).verify_raw(req.payload, binance.decode_hex(req.signature))
    assert HmacVerifier(secret.encode()).verify_raw(req.payload, binance.decode_hex(req.signature.upper()))
    assert not HmacVerifier(b"other").verify_raw(req.payload, binance.decode_hex(req.signature))
    assert {k: v for k, v in req.params.items() if k != "timestamp"} == extra


@given(params)
def test_ed25519_signing_round_trip(extra):
    sk = SigningKey.generate()
    encoded = urlencode({**extra, "timestamp": 1})
    sig = quote(base64.b64encode(sk.sign(encoded.encode()).signature).decode(), safe="")
    req = binance.parse(f"{encoded}&signature={sig}".encode(), b"", **KW)
    verifier = Ed25519Verifier(bytes(sk.verify_key))
    assert verifier.verify_raw(req.payload, binance.decode_base64(req.signature))
    assert not verifier.verify_raw(req.payload + b"x", binance.decode_base64(req.signature))


# Fragments that exercise every branch of the parser: separators, the signature name inside and
# around other names, percent-encoding, "+", and empty names and values.
_fragment = st.sampled_from(
    ["a", "b", "=", "&", "%41", "%", "+", "signature=", "&signature=", "xsignature=", "timestamp=", "1", "ff", ""]
)
_raw = st.lists(_fragment, max_size=12).map("".join)


def _reference(query: str, body: str) -> tuple[dict[str, str], bytes, str] | type[Exception]:
    try:
        params, payload, signature = binance._general(query, body)
    except E.AuthError as e:
        return type(e)
    return params, payload.encode("ascii"), signature


@given(_raw, _raw)
def test_fast_path_agrees_with_the_general_parser(query, body):
    """Whatever the shape, parse() finds the same parameters, payload and signature as the general
    parser (or rejects with the same error): the fast path is only a shortcut."""
    query = query + "&timestamp=1" if "timestamp=" not in query + body else query
    expected = _reference(query, body)
    if isinstance(expected, type):
        with pytest.raises(expected):
            binance.parse(query.encode(), body.encode(), **KW)
        return
    try:
        req = binance.parse(query.encode(), body.encode(), **KW)
    except (E.ParamMissing, E.ParamInvalid, E.RecvWindowInvalid):
        return  # the split agreed; the timestamp or recvWindow was then rejected, as it must be
    assert (req.params, req.payload, req.signature) == expected


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("", "symbol=BTCUSDT&side=BUY&timestamp=1&signature=ab"),  # form body, as ccxt sends orders
        ("symbol=BTCUSDT&timestamp=1&signature=ab", ""),  # GET
        ("symbol=BTCUSDT", "timestamp=1&signature=ab"),  # both
        ("a=b=c&timestamp=1&signature=ab", ""),  # "=" inside a value
        ("a&timestamp=1&signature=ab", ""),  # a name without a value
        ("a=1&&timestamp=1&signature=ab", ""),  # an empty parameter
        ("a=%41&timestamp=1&signature=ab", ""),  # percent-encoded
        ("a=x+y&timestamp=1&signature=ab", ""),  # "+" is a space
    ],
)
def test_fast_and_general_paths_on_common_shapes(query, body):
    req = binance.parse(query.encode(), body.encode(), **KW)
    assert (req.params, req.payload, req.signature) == _reference(query, body)


def test_duplicate_parameter_on_the_fast_path_is_named():
    with pytest.raises(E.DuplicateParameter, match="'a'"):
        binance.parse(b"a=1&a=2&timestamp=1&signature=ab", b"", **KW)
    with pytest.raises(E.DuplicateParameter, match="'a'"):
        binance.parse(b"a=1", b"a=2&timestamp=1&signature=ab", **KW)


def test_non_ascii_digits_are_not_a_timestamp():
    with pytest.raises(E.ParamInvalid):
        binance.parse(b"timestamp=%C2%B2&signature=ab", b"", **KW)
