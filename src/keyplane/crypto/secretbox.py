"""Secret boxes: AES-256-GCM ciphertexts of the secrets kept at rest (HMAC secrets, TOTP secrets).

Each ciphertext names the master key that made it (the first 8 hex digits of the key's SHA-256),
so a keyring holding several keys opens every ciphertext without trying keys in turn, and a query
over the stored ciphertexts can prove that no row still needs a given key (see
:func:`key_id_prefix`).

The associated data binds a ciphertext to the row it belongs to: a ciphertext copied onto another
API key's row, or another account's TOTP row, does not open. :func:`api_secret_aad` and
:func:`totp_secret_aad` are the one definition of that binding.

Wire form: ``v1.<key id>.<base64url nonce>.<base64url ciphertext+tag>``.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
NONCE_BYTES = 12


class SecretBoxError(Exception):
    """A ciphertext could not be opened: unknown master key, tampered, or malformed."""


class UnknownMasterKey(SecretBoxError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"ciphertext was made with master key {key_id}, which this keyring lacks")
        self.key_id = key_id


def b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def api_secret_aad(public_id: str) -> bytes:
    """Associated data of an API key's secret: the API key itself."""
    return public_id.encode()


def totp_secret_aad(user_id: int) -> bytes:
    """Associated data of an account's TOTP secret."""
    return f"totp:{user_id}".encode()


def key_id_prefix(key_id: str) -> str:
    """What every ciphertext made with ``key_id`` starts with (for a ``LIKE 'prefix%'`` query).

    A key id is 8 lowercase hex digits, so the prefix holds no ``LIKE`` wildcard."""
    return f"{VERSION}.{key_id}."


def token_key_id(token: str) -> str:
    """The id of the master key that made ``token``. Raises SecretBoxError if it is malformed."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise SecretBoxError("malformed ciphertext")
    return parts[1]


def seal(aead: AESGCM, key_id: str, plaintext: bytes, aad: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return ".".join((VERSION, key_id, b64e(nonce), b64e(aead.encrypt(nonce, plaintext, aad))))


def open_box(aead: AESGCM, token: str, aad: bytes) -> bytes:
    """Open a ciphertext made by :func:`seal` with the same key and associated data."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise SecretBoxError("malformed ciphertext")
    try:
        return aead.decrypt(b64d(parts[2]), b64d(parts[3]), aad)
    except (InvalidTag, ValueError) as e:
        raise SecretBoxError("ciphertext failed authentication") from e
