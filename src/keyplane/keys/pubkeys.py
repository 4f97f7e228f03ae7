"""Parsing users' uploaded public keys. Pure: no framework, no database."""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keyplane.keys.errors import InvalidPublicKey

OPENSSL_HINT = (
    "openssl genpkey -algorithm ed25519 -out private.pem && openssl pkey -in private.pem -pubout -out public.pem"
)


def parse_ed25519_public_key(text: str | bytes) -> bytes:
    """The raw 32-byte Ed25519 public key in a PEM (SubjectPublicKeyInfo) or a bare base64 of 32 bytes.

    Raises InvalidPublicKey with a message that says what was wrong.
    """
    data = text.encode("ascii", "replace") if isinstance(text, str) else text
    data = data.strip()
    if not data:
        raise InvalidPublicKey("the public key is empty")
    if b"PRIVATE KEY" in data:
        raise InvalidPublicKey(
            "this is a private key: upload the public key only (openssl pkey -in private.pem -pubout)"
        )
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as e:
            raise InvalidPublicKey("the PEM does not parse as a public key") from e
        if not isinstance(key, Ed25519PublicKey):
            raise InvalidPublicKey(f"the PEM holds a {type(key).__name__.replace('_', '')}, not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidPublicKey("expected a PEM public key (-----BEGIN PUBLIC KEY-----)") from e
    if len(raw) != 32:
        raise InvalidPublicKey("expected a PEM public key or 32 raw bytes in base64")
    return raw


def public_key_pem(raw: bytes) -> str:
    key = Ed25519PublicKey.from_public_bytes(raw)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
