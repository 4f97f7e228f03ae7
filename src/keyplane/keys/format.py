"""The credential format: a typed prefix, a random base62 body and a base62 CRC32 checksum.

Modelled on GitHub's token format. ``kp_live_<22 base62><6 base62 crc>`` names a key;
``kps_<40 base62><6 base62 crc>`` is an HMAC secret. The checksum is CRC32 over prefix plus body,
so a scanner can find leaked credentials with almost no false positives, and the server can
reject a typo or garbage before it touches any cache or database.

The checksum is not a security control: it detects accidents, not forgeries. Authentication always
rests on the secret or signature.

This module is pure: no framework, no database.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Literal

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}

CHECKSUM_LEN = 6  # 62**6 > 2**32, so any CRC32 fits
KEY_BODY_LEN = 22  # 62**22 > 2**130: at least 128 bits of entropy
SECRET_BODY_LEN = 40  # about 238 bits

KEY_PREFIXES = ("kp_live_", "kp_test_")
SECRET_PREFIX = "kps_"

Kind = Literal["api_key", "secret"]

_KEY_LEN = KEY_BODY_LEN + CHECKSUM_LEN
_SECRET_LEN = SECRET_BODY_LEN + CHECKSUM_LEN
_KEY_RE = re.compile(rf"kp_(?:live|test)_[0-9A-Za-z]{{{_KEY_LEN}}}")
_SECRET_RE = re.compile(rf"kps_[0-9A-Za-z]{{{_SECRET_LEN}}}")
# For scanners: any keyplane-looking token in free text, bounded by non-base62 characters.
CANDIDATE_RE = re.compile(
    rf"(?<![0-9A-Za-z_])(kp_(?:live|test)_[0-9A-Za-z]{{{_KEY_LEN}}}|kps_[0-9A-Za-z]{{{_SECRET_LEN}}})(?![0-9A-Za-z])"
)


def _b62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def _random_body(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def checksum(prefix_and_body: str) -> str:
    return _b62(zlib.crc32(prefix_and_body.encode("ascii")), CHECKSUM_LEN)


def new_api_key(environment: Literal["live", "test"] = "live") -> str:
    """A fresh API key string, for example ``kp_live_3xV...``."""
    head = f"kp_{environment}_" + _random_body(KEY_BODY_LEN)
    return head + checksum(head)


def new_secret() -> str:
    """A fresh HMAC secret string. Its ASCII bytes are the HMAC key, exactly as the user sees it."""
    head = SECRET_PREFIX + _random_body(SECRET_BODY_LEN)
    return head + checksum(head)


@dataclass(frozen=True, slots=True)
class Credential:
    kind: Kind
    value: str

    def __repr__(self) -> str:  # never print a secret, even by accident
        return f"Credential(kind={self.kind!r}, value={mask(self.value)!r})"


def _checksum_ok(value: str) -> bool:
    head, tail = value[:-CHECKSUM_LEN], value[-CHECKSUM_LEN:]
    return secrets.compare_digest(checksum(head), tail)


def has_api_key_shape(value: str) -> bool:
    """True if ``value`` is shaped like an API key (prefix, length, alphabet), checksum unchecked."""
    return _KEY_RE.fullmatch(value) is not None


def is_valid_api_key(value: str) -> bool:
    """True if ``value`` is a well-formed API key with a correct checksum."""
    return has_api_key_shape(value) and _checksum_ok(value)


def is_valid_secret(value: str) -> bool:
    return _SECRET_RE.fullmatch(value) is not None and _checksum_ok(value)


def parse_credential(value: str) -> Credential | None:
    """The credential ``value`` is, if it is a well-formed keyplane credential; otherwise None."""
    if is_valid_api_key(value):
        return Credential("api_key", value)
    if is_valid_secret(value):
        return Credential("secret", value)
    return None


def find_credentials(text: str) -> list[Credential]:
    """Every well-formed keyplane credential in ``text``; look-alikes with a bad checksum are skipped."""
    found = []
    for match in CANDIDATE_RE.finditer(text):
        cred = parse_credential(match.group(1))
        if cred is not None:
            found.append(cred)
    return found


def mask(value: str) -> str:
    """A printable stand-in: the prefix and the first four body characters of a key, nothing of a secret."""
    if value.startswith(KEY_PREFIXES):
        return value[:12] + "…"
    if value.startswith(SECRET_PREFIX):
        return SECRET_PREFIX + "…"
    return "…"
