"""The master keyring: the 32-byte keys that seal secrets at rest, oldest first.

:class:`Keyring` is an immutable set of keys, each named by its id (the first 8 hex digits of its
SHA-256). Which key seals new secrets is not decided here: the caller passes the id of the active
key (keyplane keeps it in the database, so that every process agrees on it; see
``keyplane/masterkeys.py``). Opening a ciphertext needs no choice: it names its key.

:class:`MasterKeyring` is the keyring a process holds while it runs. It re-reads its source (the
keyfile) when it meets a key id it does not hold yet, so a key added to the file by another process
is picked up on first use without a restart. A keyring from a fixed text (an environment variable)
has nothing to re-read.

Keyfile: one base64url key per line, oldest first, mode 0600, replaced atomically.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyplane.crypto.secretbox import SecretBoxError, UnknownMasterKey, b64d, b64e, open_box, seal, token_key_id

KEY_BYTES = 32


class KeyringError(SecretBoxError):
    """The keyring itself is unusable: empty, a malformed key, an unsafe keyfile."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def new_master_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_master_key(key: bytes) -> str:
    return b64e(key)


def decode_master_key(text: str) -> bytes:
    try:
        raw = b64d(text.strip())
    except (ValueError, TypeError) as e:
        raise KeyringError("a master key is not valid base64url") from e
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"a master key must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


class Keyring:
    """Master keys, oldest first. Never prints its keys."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyringError("the master keyring is empty")
        for k in keys:
            if len(k) != KEY_BYTES:
                raise KeyringError(f"a master key must be {KEY_BYTES} bytes")
        self._keys = list(keys)
        self._by_id = {key_id(k): AESGCM(k) for k in self._keys}
        self.newest_id = key_id(self._keys[-1])

    def __repr__(self) -> str:
        return f"Keyring(ids={self.ids!r})"

    @property
    def ids(self) -> list[str]:
        return [key_id(k) for k in self._keys]

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_id

    def encrypt(self, plaintext: bytes, aad: bytes, *, key_id: str) -> str:
        """Seal ``plaintext`` under the key ``key_id``. Raises UnknownMasterKey if it is not held."""
        aead = self._by_id.get(key_id)
        if aead is None:
            raise UnknownMasterKey(key_id)
        return seal(aead, key_id, plaintext, aad)

    def decrypt(self, token: str, aad: bytes) -> bytes:
        kid = token_key_id(token)
        aead = self._by_id.get(kid)
        if aead is None:
            raise UnknownMasterKey(kid)
        return open_box(aead, token, aad)

    def with_new_key(self, key: bytes) -> Keyring:
        return Keyring([*self._keys, key])

    def without(self, kid: str) -> Keyring:
        return Keyring([k for k in self._keys if key_id(k) != kid])

    def encoded(self) -> list[str]:
        return [encode_master_key(k) for k in self._keys]


def parse_keyring(text: str) -> Keyring:
    """A keyring from comma- or newline-separated base64url keys, oldest first."""
    items: Iterable[str] = (p for chunk in text.splitlines() for p in chunk.split(","))
    return Keyring([decode_master_key(p) for p in items if p.strip()])


def read_keyfile(path: Path) -> Keyring:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyringError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return parse_keyring(path.read_text("ascii"))


def load_or_create_keyfile(path: Path) -> Keyring:
    """Read the keyfile, creating it (mode 0600) with one fresh key on first run."""
    if path.exists():
        return read_keyfile(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_keyfile(path, Keyring([new_master_key()]))
    return read_keyfile(path)


def write_keyfile(path: Path, keyring: Keyring) -> None:
    """Atomically replace the keyfile: write a 0600 temp file, fsync, rename."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, ("\n".join(keyring.encoded()) + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class MasterKeyring:
    """The keyring a running process holds, re-read from its source when a key id is missing.

    ``load`` reads the source; ``reloadable`` says whether reading it again can give anything new
    (a keyfile can change under a running process; an environment variable cannot).
    """

    def __init__(self, load: Callable[[], Keyring], *, reloadable: bool) -> None:
        self._load = load
        self.reloadable = reloadable
        self._lock = threading.Lock()
        self.keyring = load()

    def __repr__(self) -> str:
        return f"MasterKeyring(reloadable={self.reloadable}, ids={self.keyring.ids})"

    def reload(self) -> bool:
        """Re-read the source; True if the set of keys changed."""
        if not self.reloadable:
            return False
        with self._lock:
            fresh = self._load()
            changed = fresh.ids != self.keyring.ids
            self.keyring = fresh
        return changed

    def require(self, kid: str) -> Keyring:
        """A keyring that holds ``kid``, re-reading the source once if needed; else UnknownMasterKey."""
        ring = self.keyring
        if kid in ring:
            return ring
        self.reload()
        ring = self.keyring
        if kid not in ring:
            raise UnknownMasterKey(kid)
        return ring

    def encrypt(self, plaintext: bytes, aad: bytes, *, key_id: str) -> str:
        return self.require(key_id).encrypt(plaintext, aad, key_id=key_id)

    def decrypt(self, token: str, aad: bytes) -> bytes:
        return self.require(token_key_id(token)).decrypt(token, aad)
