"""TOTP (RFC 6238) and recovery codes. Pure: no framework, no database.

Replay protection works on the time-step counter: :func:`verify_totp` returns the counter of the
code it accepted, the caller stores it, and a later code at or before that counter is refused even
if it is still inside the drift window. That also closes the window in which a shoulder-surfed code
could be reused.
"""

from __future__ import annotations

import base64
import hmac
import io
import re
import secrets
import time

import pyotp
import qrcode
import qrcode.image.svg

from keyplane.crypto.hmacsha256 import hmac_sha256

DIGITS = 6
INTERVAL_S = 30
DRIFT_STEPS = 1  # accept the previous and the next 30-second step as well
RECOVERY_CODE_COUNT = 10

# ASCII digits only: ``\d`` also matches ``１２３４５６`` and ``١٢٣٤٥٦``, which no authenticator
# shows and which ``hmac.compare_digest`` cannot compare (it refuses non-ASCII strings).
_CODE_RE = re.compile(r"[0-9]{6}", re.ASCII)
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


class TotpRejected(ValueError):
    """The code is malformed, wrong, or not newer than the last accepted one."""


def new_totp_secret() -> str:
    """160 random bits in base32, as authenticator apps expect (RFC 4226 recommends 160)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_S).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The provisioning URI as an inline SVG (a path, so it scales and needs no image file)."""
    img = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buf = io.BytesIO()
    img.save(buf)
    svg = buf.getvalue().decode("utf-8")
    return svg[svg.index("<svg") :] if "<svg" in svg else svg


def grouped(secret: str) -> str:
    """The manual-entry key in groups of four, easier to type."""
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def normalise_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code or "")


def counter_at(now: float) -> int:
    return int(now // INTERVAL_S)


def totp_at(secret: str, counter: int) -> str:
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL_S).generate_otp(counter)


def verify_totp(
    secret: str, code: str, *, last_counter: int | None, now: float | None = None, drift: int = DRIFT_STEPS
) -> int:
    """Check ``code`` against ``secret`` at ``now`` (± ``drift`` steps); return the matched counter.

    Raises TotpRejected when the code is malformed, matches no step in the window, or matches a
    step at or before ``last_counter`` (a replay).
    """
    value = normalise_code(code)
    if not _CODE_RE.fullmatch(value):
        raise TotpRejected("a code is 6 digits")
    current = counter_at(time.time() if now is None else now)
    matched: int | None = None
    for counter in range(current - drift, current + drift + 1):
        # Compare every candidate, so timing does not reveal which step matched.
        if hmac.compare_digest(totp_at(secret, counter), value) and matched is None:
            matched = counter
    if matched is None:
        raise TotpRejected("wrong code")
    if last_counter is not None and matched <= last_counter:
        raise TotpRejected("this code was already used")
    return matched


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """``xxxxx-xxxxx`` codes with about 49 bits of entropy each."""
    return [
        "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(5))
        + "-"
        + "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(5))
        for _ in range(count)
    ]


def normalise_recovery_code(code: str) -> str:
    return re.sub(r"[\s-]", "", (code or "").lower())


def looks_like_recovery_code(code: str) -> bool:
    value = normalise_recovery_code(code)
    return len(value) == 10 and all(c in _RECOVERY_ALPHABET for c in value)


def recovery_key(totp_secret: str) -> bytes:
    """The purpose key for hashing one account's recovery codes, derived from its TOTP secret.

    The TOTP secret is only stored encrypted under the master keyring, so a copy of the database
    alone cannot be used to brute-force the recovery-code hashes offline.
    """
    return hmac_sha256(totp_secret.encode("ascii"), b"keyplane recovery codes v1")


def recovery_code_hash(key: bytes, user_id: int, code: str) -> str:
    """HMAC-SHA256 of a recovery code under :func:`recovery_key`, bound to the user.

    The codes carry ~49 random bits, so a keyed fast hash is enough (no argon2 loop over ten hashes).
    """
    msg = f"{user_id}:{normalise_recovery_code(code)}".encode()
    return base64.b32encode(hmac_sha256(key, msg)).decode("ascii").rstrip("=").lower()
