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


def test_created_window_and_algorithm_fit():
    req = httpsig.parse(_headers(created=1000), has_body=False)
    httpsig.check_created(req, 1000 + 5, 5, 1)
    httpsig.check_created(req, 1000 - 1, 5, 1)
    with pytest.raises(E.TimestampOutsideWindow):
        httpsig.check_created(req, 1000 + 6, 5, 1)
    with pytest.raises(E.TimestampOutsideWindow):
        httpsig.check_created(req, 1000 - 2, 5, 1)
    httpsig.check_algorithm(req, "hmac")
    with pytest.raises(AlgorithmUnknown):
        httpsig.check_algorithm(req, "ed25519")


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
