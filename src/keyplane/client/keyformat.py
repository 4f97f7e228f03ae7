"""Recognise keyplane credentials on the holder side, without the server's packages.

A keyplane API key is ``kp_live_`` (or ``kp_test_``) followed by 22 base62 characters and a
6-character base62 CRC32 of everything before it; a secret is ``kps_``, 40 base62 characters and
the same kind of checksum. The checksum catches a typo or a truncated paste before the key is
stored, so ``keyplane keys add`` can say so at once instead of the server refusing every request
later. It detects accidents, not forgeries: it proves nothing about who issued the key.
"""

from __future__ import annotations

import hmac
import re
import zlib

from keyplane.client.errors import ClientError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_LEN = 6
KEY_PREFIXES = ("kp_live_", "kp_test_")
SECRET_PREFIX = "kps_"
_KEY = re.compile(r"kp_(?:live|test)_[0-9A-Za-z]{28}")
_SECRET = re.compile(r"kps_[0-9A-Za-z]{46}")


class BadCredential(ClientError):
    """A value that looks like a keyplane key or secret but is not a well-formed one."""


def _checksum(head: str) -> str:
    n, out = zlib.crc32(head.encode("ascii")), []
    for _ in range(CHECKSUM_LEN):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def _checksum_ok(value: str) -> bool:
    return hmac.compare_digest(_checksum(value[:-CHECKSUM_LEN]), value[-CHECKSUM_LEN:])


def looks_like_keyplane(value: str) -> bool:
    """Whether ``value`` starts like a keyplane key or secret (its format then must hold)."""
    return value.startswith((*KEY_PREFIXES, SECRET_PREFIX))


def is_api_key(value: str) -> bool:
    """A well-formed keyplane API key: prefix, length, alphabet and checksum."""
    return _KEY.fullmatch(value) is not None and _checksum_ok(value)


def is_secret(value: str) -> bool:
    """A well-formed keyplane HMAC secret: prefix, length, alphabet and checksum."""
    return _SECRET.fullmatch(value) is not None and _checksum_ok(value)


def check_api_key(value: str) -> str:
    """``value`` if it is a well-formed keyplane API key; raises ``BadCredential`` saying what is
    wrong otherwise (a secret pasted in its place, a wrong length, a failed checksum)."""
    if is_api_key(value):
        return value
    if value.startswith(SECRET_PREFIX):
        raise BadCredential("the API key given is a keyplane secret (kps_…): paste the API key (kp_live_…) first")
    if not value.startswith(KEY_PREFIXES):
        raise BadCredential("not a keyplane API key: it must start with kp_live_ or kp_test_")
    if _KEY.fullmatch(value) is None:
        raise BadCredential("not a keyplane API key: after kp_live_ come 28 letters and digits; was it cut short?")
    raise BadCredential("the API key's checksum does not match: it was mistyped or altered; copy it again")


def check_secret(value: str) -> str:
    """``value`` if it is a well-formed keyplane secret; raises ``BadCredential`` otherwise. The
    message never contains any part of the value."""
    if is_secret(value):
        return value
    if value.startswith(KEY_PREFIXES):
        raise BadCredential("the secret given is an API key (kp_live_…): paste the secret (kps_…)")
    if not value.startswith(SECRET_PREFIX):
        raise BadCredential("not a keyplane secret: it must start with kps_")
    if _SECRET.fullmatch(value) is None:
        raise BadCredential("not a keyplane secret: after kps_ come 46 letters and digits; was it cut short?")
    raise BadCredential("the secret's checksum does not match: it was mistyped or altered; copy it again")
