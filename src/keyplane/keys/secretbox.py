"""AES-256-GCM encryption of HMAC secrets at rest, under a rotatable list of master keys.

The keyring is a list of 32-byte keys, oldest first; new ciphertexts use the newest. Each ciphertext
names the key that made it (the first 8 hex digits of its SHA-256), so old ciphertexts stay readable
until ``keyplane admin rotate-master-key`` re-encrypts them.

The associated data binds a ciphertext to the API key it belongs to: a ciphertext copied onto another
key's row does not decrypt.

Wire form: ``v1.<key id>.<base64url nonce>.<base64url ciphertext+tag>``.

This module is pure: no framework, no database.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_VERSION = "v1"


class SecretBoxError(Exception):
    """A ciphertext could not be opened: unknown master key, tampered, or malformed."""


class UnknownMasterKey(SecretBoxError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"ciphertext was made with master key {key_id}, which this keyring lacks")
        self.key_id = key_id


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_master_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_master_key(key: bytes) -> str:
    return _b64e(key)


def decode_master_key(text: str) -> bytes:
    try:
        raw = _b64d(text.strip())
    except (ValueError, TypeError) as e:
        raise SecretBoxError("a master key is not valid base64url") from e
    if len(raw) != KEY_BYTES:
        raise SecretBoxError(f"a master key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


class Keyring:
    """Master keys, oldest first. Never prints its keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise SecretBoxError("the master keyring is empty")
        for k in keys:
            if len(k) != KEY_BYTES:
                raise SecretBoxError(f"a master key must be {KEY_BYTES} bytes")
        self._keys = list(keys)
        self._by_id = {key_id(k): AESGCM(k) for k in self._keys}
        self.newest_id = key_id(self._keys[-1])

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids!r})"

    @property
    def ids(self) -> list[str]:
        return [key_id(k) for k in self._keys]

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        nonce = os.urandom(12)
        ct = self._by_id[self.newest_id].encrypt(nonce, plaintext, aad)
        return ".".join((_VERSION, self.newest_id, _b64e(nonce), _b64e(ct)))

    def decrypt(self, token: str, aad: bytes) -> bytes:
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise SecretBoxError("malformed ciphertext")
        _, kid, nonce_text, ct_text = parts
        aead = self._by_id.get(kid)
        if aead is None:
            raise UnknownMasterKey(kid)
        try:
            return aead.decrypt(_b64d(nonce_text), _b64d(ct_text), aad)
        except (InvalidTag, ValueError) as e:
            raise SecretBoxError("ciphertext failed authentication") from e

    def needs_reencrypt(self, token: str) -> bool:
        parts = token.split(".")
        return len(parts) != 4 or parts[1] != self.newest_id

    def with_new_key(self, key: bytes) -> Keyring:
        return Keyring([*self._keys, key])

    def only_newest(self) -> Keyring:
        return Keyring([self._keys[-1]])

    def encoded(self) -> list[str]:
        return [encode_master_key(k) for k in self._keys]


def parse_keyring(text: str) -> Keyring:
    """A keyring from comma- or newline-separated base64url keys, oldest first."""
    items: Iterable[str] = (p for chunk in text.splitlines() for p in chunk.split(","))
    return Keyring([decode_master_key(p) for p in items if p.strip()])


def load_or_create_keyfile(path: Path) -> Keyring:
    """Read the embedded-mode keyfile, creating it (mode 0600) with one fresh key on first run."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretBoxError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
        return parse_keyring(path.read_text("ascii"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_keyfile(path, Keyring([new_master_key()]))
    return parse_keyring(path.read_text("ascii"))


def write_keyfile(path: Path, keyring: Keyring) -> None:
    """Atomically replace the keyfile: write a 0600 temp file, fsync, rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, ("\n".join(keyring.encoded()) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
