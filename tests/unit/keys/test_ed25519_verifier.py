"""The Ed25519 verifier of a key record agrees with PyNaCl's VerifyKey.verify on every input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from keyplane.keys.record import Ed25519Verifier


def _nacl_accepts(key: VerifyKey, payload: bytes, signature: bytes) -> bool:
    try:
        key.verify(payload, signature)
    except (BadSignatureError, ValueError):
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(
    seed=st.binary(min_size=32, max_size=32),
    payload=st.binary(max_size=600),
    flip=st.none() | st.tuples(st.sampled_from(["signature", "payload"]), st.integers(0, 10_000), st.integers(1, 255)),
)
def test_verify_raw_accepts_exactly_what_pynacl_accepts(
    seed: bytes, payload: bytes, flip: tuple[str, int, int] | None
) -> None:
    sk = SigningKey(seed)
    signature = sk.sign(payload).signature
    if flip is not None:  # one byte changed, in the signature or (if there is one) the payload
        where, i, bit = flip
        in_signature = where == "signature" or not payload
        buf = bytearray(signature if in_signature else payload)
        buf[i % len(buf)] ^= bit
        signature, payload = (bytes(buf), payload) if in_signature else (signature, bytes(buf))
    verifier = Ed25519Verifier(bytes(sk.verify_key))
    assert verifier.verify_raw(payload, signature) == _nacl_accepts(sk.verify_key, payload, signature)
    assert verifier.verify_raw(payload, signature) == (flip is None)


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_a_signature_of_the_wrong_length_is_refused(length: int) -> None:
    sk = SigningKey.generate()
    good = sk.sign(b"payload").signature
    verifier = Ed25519Verifier(bytes(sk.verify_key))
    assert verifier.verify_raw(b"payload", good)
    assert not verifier.verify_raw(b"payload", (good * 3)[:length])


def test_another_keys_signature_is_refused() -> None:
    one, other = SigningKey.generate(), SigningKey.generate()
    assert not Ed25519Verifier(bytes(one.verify_key)).verify_raw(b"m", other.sign(b"m").signature)
