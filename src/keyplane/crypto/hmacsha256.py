"""HMAC-SHA256 (RFC 2104): a one-shot MAC, and a key whose schedule is done once.

HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m)), where K' is the key padded to SHA-256's 64-byte
block (or hashed first if it is longer). The two hash states after absorbing ``K' ^ ipad`` and
``K' ^ opad`` depend on the key alone, so :class:`HmacSha256Key` keeps them and each MAC costs two
state copies and three small updates. That is the same computation as ``hmac.new(K, m, sha256)``
without its per-call key setup, which on OpenSSL 3 costs more than hashing a short request.

Pure: no I/O, no clock. The key bytes are not kept, only the two derived states.
"""

from __future__ import annotations

import hashlib
import hmac

_BLOCK = 64  # SHA-256 block size in bytes
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacSha256Key:
    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))

    def __repr__(self) -> str:
        return "HmacSha256Key(<secret>)"

    def digest(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, message: bytes, mac: bytes) -> bool:
        """Whether ``mac`` is this key's MAC of ``message``, compared in constant time."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return hmac.compare_digest(outer.digest(), mac)


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """One HMAC-SHA256, for keys used once (a derived purpose key, a recovery-code hash)."""
    return hmac.new(key, message, hashlib.sha256).digest()
