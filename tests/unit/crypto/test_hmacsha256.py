from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from keyplane.crypto.hmacsha256 import HmacSha256Key, hmac_sha256


@given(st.binary(max_size=200), st.binary(max_size=600))
def test_matches_the_standard_library(key, message):
    """Same MAC as hmac.new for keys shorter than, equal to and longer than the 64-byte block."""
    expected = hmac.new(key, message, hashlib.sha256).digest()
    assert hmac_sha256(key, message) == expected
    k = HmacSha256Key(key)
    assert k.digest(message) == expected
    assert k.verify(message, expected)
    assert not k.verify(message, bytes(32))
    assert not k.verify(message + b"x", expected)


def test_the_state_is_reused_without_leaking_between_calls():
    k = HmacSha256Key(b"kps_secret")
    first = k.digest(b"a")
    k.digest(b"something else entirely")
    assert k.digest(b"a") == first


def test_repr_shows_no_key():
    assert "secret" not in repr(HmacSha256Key(b"kps_secret")).replace("<secret>", "")
    assert "kps" not in repr(HmacSha256Key(b"kps_secret"))
