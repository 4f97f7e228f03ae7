"""The encrypted keystore file.

Layout (UTF-8 text, four lines)::

    keyplane-keystore/1
    {"kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1, "salt": "..."}, "check": "..."}
    {"profiles": {"<name>": {"meta": {...}, "nonce": "...", "ct": "..."}}}
    <hex HMAC-SHA256 over every byte above>

- The passphrase goes through scrypt (memory-hard; 32 MiB at the default n=2**15) to a root key.
  HKDF splits it into three purpose keys: one encrypts records, one MACs the file, one makes the
  ``check`` value.
- ``check`` lets a wrong passphrase be told apart without decrypting any record.
- Each profile is one AES-256-GCM record; its name and metadata are the associated data, so a
  record cannot be renamed or its metadata changed without detection.
- The trailing MAC covers every byte of the file, so changing any byte is detected, including in
  places (whitespace, the header) that the records do not cover.
- Writes go to a temporary file in the same directory (mode 0600), are fsynced, then renamed over
  the old file: a crash or a kill leaves either the old file or the new one, never a mix. A file
  that does not verify is never overwritten.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keyplane.client.errors import KeystoreCorrupt, ProfileNotFound, WrongPassphrase
from keyplane.client.profile import Profile, check_name, from_parts

MAGIC = "keyplane-keystore/1"
DEFAULT_N = 2**15
MIN_N = 2**12  # refuse files whose KDF was weakened below this
_MAX_N = 2**22


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not a base64 string")
    return base64.b64decode(text.encode("ascii"), validate=True)


class _Keys:
    """The three purpose keys derived from one passphrase."""

    def __init__(self, passphrase: str, kdf: dict[str, Any]) -> None:
        root = hashlib.scrypt(
            passphrase.encode("utf-8"),
            salt=_unb64(kdf["salt"]),
            n=int(kdf["n"]),
            r=int(kdf["r"]),
            p=int(kdf["p"]),
            maxmem=256 * 1024 * 1024,
            dklen=32,
        )
        self.enc = self._sub(root, b"keyplane keystore record")
        self.mac = self._sub(root, b"keyplane keystore file mac")
        self.check = self._sub(root, b"keyplane keystore passphrase check")

    @staticmethod
    def _sub(root: bytes, info: bytes) -> bytes:
        return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(root)


def _aad(name: str, meta: dict[str, Any]) -> bytes:
    return json.dumps({"name": name, "meta": meta}, sort_keys=True, separators=(",", ":")).encode()


class Keystore:
    """An opened keystore: the profiles, decrypted in memory.

    Use ``Keystore.open(path, passphrase)`` for an existing file and ``Keystore.create(...)`` for a
    new one; ``save()`` writes atomically. Raises ``WrongPassphrase`` or ``KeystoreCorrupt``.
    """

    def __init__(self, path: Path, passphrase: str, kdf: dict[str, Any], profiles: dict[str, Profile]) -> None:
        self.path = path
        self._passphrase = passphrase
        self._kdf = kdf
        self._keys = _Keys(passphrase, kdf)
        self.profiles = profiles

    def __repr__(self) -> str:
        return f"Keystore(path={str(self.path)!r}, profiles={sorted(self.profiles)!r})"

    # ---- opening -------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, passphrase: str, *, n: int = DEFAULT_N) -> Keystore:
        if not passphrase:
            raise WrongPassphrase("the keystore passphrase must not be empty")
        kdf = {"name": "scrypt", "n": n, "r": 8, "p": 1, "salt": _b64(secrets.token_bytes(16))}
        return cls(Path(path), passphrase, kdf, {})

    @classmethod
    def open(cls, path: Path, passphrase: str) -> Keystore:
        path = Path(path)
        raw = cls._read(path)
        header, body = cls._parse(path, raw)
        keys = cls.unlock(header, passphrase)
        head, _, mac_line = raw[:-1].rpartition(b"\n")
        expected = hmac.new(keys.mac, head + b"\n", hashlib.sha256).hexdigest().encode()
        if not hmac.compare_digest(expected, mac_line):
            raise KeystoreCorrupt(f"the keystore {path} was altered or damaged (its checksum does not match)")
        store = cls(path, passphrase, header["kdf"], {})
        store.profiles = store._decrypt_all(body)
        return store

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeystoreCorrupt(f"no keystore at {path}") from None
        except OSError as e:
            raise KeystoreCorrupt(f"cannot read the keystore {path}: {e.strerror}") from None

    @staticmethod
    def _parse(path: Path, raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        lines = raw.split(b"\n")
        if len(lines) != 5 or lines[0] != MAGIC.encode() or lines[4] != b"":
            raise KeystoreCorrupt(f"{path} is not a keyplane keystore, or it is truncated")
        try:
            header = json.loads(lines[1])
            body = json.loads(lines[2])
            kdf = header["kdf"]
            if kdf["name"] != "scrypt" or not (MIN_N <= int(kdf["n"]) <= _MAX_N) or int(kdf["n"]) & (int(kdf["n"]) - 1):
                raise ValueError("unsupported KDF parameters")
            if not (1 <= int(kdf["r"]) <= 32 and 1 <= int(kdf["p"]) <= 16):
                raise ValueError("unsupported KDF parameters")
            _unb64(kdf["salt"])
            _unb64(header["check"])
            if not isinstance(body.get("profiles"), dict):
                raise ValueError("no profiles")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise KeystoreCorrupt(f"the keystore {path} is damaged ({type(e).__name__})") from None
        return header, body

    @staticmethod
    def unlock(header: dict[str, Any], passphrase: str) -> _Keys:
        """Derive the keys and check the passphrase against ``check``; decrypts nothing."""
        keys = _Keys(passphrase, header["kdf"])
        if not hmac.compare_digest(keys.check, _unb64(header["check"])):
            raise WrongPassphrase()
        return keys

    @classmethod
    def check_passphrase(cls, path: Path, passphrase: str) -> None:
        """Raise ``WrongPassphrase`` unless ``passphrase`` opens ``path``, without decrypting a record."""
        path = Path(path)
        header, _ = cls._parse(path, cls._read(path))
        cls.unlock(header, passphrase)

    def _decrypt_all(self, body: dict[str, Any]) -> dict[str, Profile]:
        out: dict[str, Profile] = {}
        aes = AESGCM(self._keys.enc)
        for name, rec in body["profiles"].items():
            try:
                meta = rec["meta"]
                plain = aes.decrypt(_unb64(rec["nonce"]), _unb64(rec["ct"]), _aad(name, meta))
                creds = json.loads(plain)
            except (InvalidTag, KeyError, ValueError, TypeError):
                raise KeystoreCorrupt(f"the keystore record {name!r} was altered or damaged") from None
            out[name] = from_parts(name, meta, creds, "keystore")
        return out

    # ---- changing ------------------------------------------------------------------------------

    def get(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            raise ProfileNotFound(name, list(self.profiles)) from None

    def put(self, profile: Profile) -> None:
        self.profiles[check_name(profile.name)] = profile

    def remove(self, name: str) -> None:
        self.get(name)
        del self.profiles[name]

    def change_passphrase(self, new_passphrase: str, *, n: int | None = None) -> None:
        """Re-encrypt every record under a new passphrase (and a new salt) and save atomically."""
        if not new_passphrase:
            raise WrongPassphrase("the new passphrase must not be empty")
        kdf = {**self._kdf, "salt": _b64(secrets.token_bytes(16))}
        if n is not None:
            kdf["n"] = n
        self._passphrase, self._kdf, self._keys = new_passphrase, kdf, _Keys(new_passphrase, kdf)
        self.save()

    def render(self) -> bytes:
        aes = AESGCM(self._keys.enc)
        records: dict[str, Any] = {}
        for name in sorted(self.profiles):
            profile = self.profiles[name]
            meta = profile.public()
            nonce = secrets.token_bytes(12)
            plain = json.dumps(profile.credentials()).encode()
            records[name] = {
                "meta": meta,
                "nonce": _b64(nonce),
                "ct": _b64(aes.encrypt(nonce, plain, _aad(name, meta))),
            }
        header = {"kdf": self._kdf, "check": _b64(self._keys.check)}
        head = b"\n".join(
            [MAGIC.encode(), json.dumps(header, sort_keys=True).encode(), json.dumps({"profiles": records}).encode()]
        )
        head += b"\n"
        return head + hmac.new(self._keys.mac, head, hashlib.sha256).hexdigest().encode() + b"\n"

    def save(self) -> None:
        atomic_write(self.path, self.render())


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old bytes or the new
    ones, never a mix. The file is created with mode 0600 and its directory with 0700."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
