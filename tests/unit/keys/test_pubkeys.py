from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyplane.keys.errors import InvalidPublicKey
from keyplane.keys.pubkeys import parse_ed25519_public_key, public_key_pem
from kptest.clients import ed25519_keypair


def test_pem_and_raw_base64():
    _, pub = ed25519_keypair()
    raw = parse_ed25519_public_key(pub)
    assert len(raw) == 32
    assert parse_ed25519_public_key(base64.b64encode(raw).decode()) == raw
    assert parse_ed25519_public_key(public_key_pem(raw)) == raw


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----", "does not parse"),
        ("hello world", "expected a PEM"),
        (base64.b64encode(b"x" * 31).decode(), "32 raw bytes"),
    ],
)
def test_malformed(value, message):
    with pytest.raises(InvalidPublicKey, match=message):
        parse_ed25519_public_key(value)


def test_other_key_types_and_private_keys_are_refused():
    with pytest.raises(InvalidPublicKey, match="not an Ed25519 key"):
        parse_ed25519_public_key(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    with pytest.raises(InvalidPublicKey, match="not an Ed25519 key"):
        parse_ed25519_public_key(_pem(ec.generate_private_key(ec.SECP256R1())))
    priv, _ = ed25519_keypair()
    with pytest.raises(InvalidPublicKey, match="private key"):
        parse_ed25519_public_key(priv)
