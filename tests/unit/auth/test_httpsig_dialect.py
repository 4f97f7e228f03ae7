"""The pure RFC 9421 pieces: structured-field parsing, the signature base, Content-Digest."""

from __future__ import annotations

import base64
import hashlib
import hmac

import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.auth import errors as E
from keyplane.auth.dialects import httpsig, sfv
from keyplane.auth.errors import (
    AlgorithmUnknown,
    ComponentMissing,
    ContentDigestInvalid,
    ContentDigestMismatch,
    SignatureInputMalformed,
    SignatureMalformed,
)
from keyplane.client.httpsig import content_digest, sign_request

KEY = "kp_live_abcdefghijklmnopqrstuvwxyz12"
SECRET = "s" * 43


def _headers(**kw):
    h = sign_request("GET", "https://x.example/v1/keys/self?a=1", {}, key_id=KEY, secret=SECRET, **kw)
    return {k.lower(): v for k, v in h.items()}


def test_round_trip_with_keyplane_signer():
    h = _headers(created=1_700_000_000, nonce="abcdefghij")
    req = httpsig.parse(h, has_body=False)
    assert (req.key_id, req.created, req.nonce, req.alg) == (KEY, 1_700_000_000, "abcdefghij", "hmac-sha256")
    base = httpsig.signature_base(req, httpsig.Target("GET", "/v1/keys/self", "a=1", "x.example", "https", {}))
    assert base.startswith(b'"@method": GET\n"@path": /v1/keys/self\n"@query": ?a=1\n"@signature-params": (')
    assert hmac.compare_digest(hmac.new(SECRET.encode(), base, hashlib.sha256).digest(), req.signature)


@pytest.mark.parametrize(
    ("sig_input", "error", "needle"),
    [
        ('sig1=("@method" "@path" "@query");nonce="abcdefgh";keyid="k"', SignatureInputMalformed, "created"),
        ('sig1=("@method" "@path" "@query");created=1;keyid="k"', SignatureInputMalformed, "nonce"),
        ('sig1=("@method" "@path" "@query");created=1;nonce="abcdefgh"', SignatureInputMalformed, "keyid"),
        (
            'sig1=("@method" "@path" "@query");created="1";nonce="abcdefgh";keyid="k"',
            SignatureInputMalformed,
            "integer",
        ),
        ('sig1=("@method" "@path" "@query");created=1;nonce="short";keyid="k"', SignatureInputMalformed, "nonce"),
        ('sig1=("@method" "@path");created=1;nonce="abcdefgh";keyid="k"', ComponentMissing, "@query"),
        ('sig1=("@method" "@query");created=1;nonce="abcdefgh";keyid="k"', ComponentMissing, "@path"),
        ('sig1=("@path" "@query");created=1;nonce="abcdefgh";keyid="k"', ComponentMissing, "@method"),
        (
            'sig1=("@method" "@path" "@query" "@method");created=1;nonce="abcdefgh";keyid="k"',
            SignatureInputMalformed,
            "repeated",
        ),
        (
            'sig1=("@method" "@path" "@query" "@status");created=1;nonce="abcdefgh";keyid="k"',
            SignatureInputMalformed,
            "@status",
        ),
        (
            'sig1=("@method" "@path" "@query" "X-Foo");created=1;nonce="abcdefgh";keyid="k"',
            SignatureInputMalformed,
            "lowercase",
        ),
        (
            'sig1=("@method" "@path" "@query" "date";sf);created=1;nonce="abcdefgh";keyid="k"',
            SignatureInputMalformed,
            "parameters",
        ),
        (
            'sig1=("@method" "@path" "@query");created=1;nonce="abcdefgh";keyid="k";alg="rsa-pss-sha512"',
            AlgorithmUnknown,
            "rsa-pss-sha512",
        ),
        ("sig1=(@method)", SignatureInputMalformed, "malformed"),
        ('sig1=("@method" "@path" "@query");created=1.5', SignatureInputMalformed, "malformed"),
        ('sig1=("@method" "@path" "@query"', SignatureInputMalformed, "malformed"),
        ('sig1="@method"', SignatureInputMalformed, "malformed"),
        ("SIG1=()", SignatureInputMalformed, "malformed"),
        ('sig1=("@method" "@path" "@query");created=1;nonce="abc\\q";keyid="k"', SignatureInputMalformed, "malformed"),
    ],
)
def test_signature_input_table(sig_input, error, needle):
    with pytest.raises(error) as info:
        httpsig.parse({"signature-input": sig_input, "signature": "sig1=:AAAA:"}, has_body=False)
    assert needle in info.value.message


@pytest.mark.parametrize("signature", ["sig1=AAAA", "sig1=:AA$A:", "sig1=:AAAA", "other=:AAAA:", "sig1=:AAAA:,"])
def test_signature_table(signature):
    h = _headers()
    with pytest.raises(SignatureMalformed):
        httpsig.parse({**h, "signature": signature}, has_body=False)


def test_missing_headers():
    with pytest.raises(E.SignatureMissing):
        httpsig.parse({}, has_body=False)


def test_body_requires_content_digest_coverage():
    with pytest.raises(ComponentMissing) as info:
        httpsig.parse(_headers(), has_body=True)
    assert info.value.component == "content-digest"


def test_content_digest():
    body = b'{"a":1}'
    httpsig.verify_content_digest(content_digest(body), body)
    sha512 = "sha-512=:" + base64.b64encode(hashlib.sha512(body).digest()).decode() + ":"
    httpsig.verify_content_digest(sha512, body)
    httpsig.verify_content_digest("md5=:AAAA:, " + content_digest(body), body)  # unknown members are skipped
    with pytest.raises(ContentDigestMismatch):
        httpsig.verify_content_digest(content_digest(b"other"), body)
    wrong512 = "sha-512=:" + base64.b64encode(hashlib.sha512(b"x").digest()).decode() + ":"
    with pytest.raises(ContentDigestMismatch):
        httpsig.verify_content_digest(content_digest(body) + ", " + wrong512, body)
    with pytest.raises(ContentDigestInvalid):
        httpsig.verify_content_digest("md5=:AAAA:", body)
    with pytest.raises(ContentDigestInvalid):
        httpsig.verify_content_digest("sha-256=abc", body)
    with pytest.raises(ComponentMissing):
        httpsig.verify_content_digest(None, body)


def _scope(headers: dict[str, str], method: str = "GET", path: str = "/v1/keys/self", query: str = "a=1"):
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "scheme": "https",
        "server": ("x.example", 443),
        "headers": [(k.encode(), v.encode()) for k, v in {"host": "x.example", **headers}.items()],
    }


def test_read_gives_the_pipeline_its_request():
    h = _headers(created=1000, nonce="abcdefghij")
    req = httpsig.read(_scope(h), b"", past_s=5, future_s=1)
    assert (req.dialect, req.key_id, req.algorithm) == ("httpsig", KEY, "hmac")
    assert req.replay_token == "nonce:abcdefghij" and req.single_use
    assert (req.signed_at_s, req.not_before_s, req.not_after_s) == (1000.0, 999.0, 1005.0)
    assert req.params == {"a": "1"}
    assert req.digest is None
    assert hmac.compare_digest(hmac.new(SECRET.encode(), req.payload, hashlib.sha256).digest(), req.signature)
    # ``expires`` closes the window earlier.
    h["signature-input"] = h["signature-input"].replace(";created=1000", ";created=1000;expires=1002")
    assert httpsig.read(_scope(h), b"", 5, 1).not_after_s == 1002.0


def test_time_and_algorithm_rejections():
    with pytest.raises(E.TimestampOutsideWindow, match="in the future"):
        httpsig.reject_time(1000.0, 1005.0, 998.0, 5, 1)
    with pytest.raises(E.TimestampOutsideWindow, match="ago"):
        httpsig.reject_time(1000.0, 1005.0, 1006.0, 5, 1)
    with pytest.raises(E.TimestampOutsideWindow, match="expired at 1002"):
        httpsig.reject_time(1000.0, 1002.0, 1003.0, 5, 1)
    with pytest.raises(AlgorithmUnknown, match="ed25519 key"):
        httpsig.reject_algorithm("hmac", "ed25519")


def test_covered_header_must_be_present():
    h = _headers()
    h["signature-input"] = h["signature-input"].replace('"@query")', '"@query" "date")')
    req = httpsig.parse(h, has_body=False)
    with pytest.raises(ComponentMissing):
        httpsig.signature_base(req, httpsig.Target("GET", "/", "", "h", "http", {}))
    base = httpsig.signature_base(req, httpsig.Target("GET", "/", "", "h", "http", {"date": "Tue"}))
    assert b'"date": Tue\n' in base


_sf_strings = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20)
_params = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_\-.]{0,8}", fullmatch=True),
    st.one_of(st.integers(-(10**14), 10**14), _sf_strings, st.booleans()),
    max_size=4,
)


@given(
    components=st.lists(st.from_regex(r"@?[a-z][a-z0-9\-]{0,10}", fullmatch=True), max_size=5, unique=True),
    params=_params,
    label=st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True),
)
def test_parser_agrees_with_http_sf(components, params, label):
    """Our fast subset parser and serializer agree with a general RFC 8941 implementation."""
    inner = sfv.InnerList(tuple((c, {}) for c in components), dict(params))
    text = f"{label}={sfv.serialize_inner_list(inner)}"
    ours = sfv.parse_inner_list_dict(text)
    theirs = http_sf.parse(text.encode(), tltype="dictionary")
    assert list(ours) == list(theirs) == [label]
    items, their_params = theirs[label]
    assert [name for name, _ in items] == [name for name, _ in ours[label].items]
    assert dict(their_params) == ours[label].params
    assert http_sf.ser(theirs) == text


@given(st.binary(max_size=64))
def test_byte_sequences_round_trip(data):
    text = "sig1=:" + base64.b64encode(data).decode() + ":"
    assert sfv.parse_bytes_dict(text) == {"sig1": data}
