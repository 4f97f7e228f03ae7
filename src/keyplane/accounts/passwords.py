"""Password hashing with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile), and the
rules a new password must meet: a minimum length, and not on the shipped common-password list."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; this only bounds the work one request can ask for

# Verifying against this hash when the email is unknown makes a wrong email cost as much as a
# wrong password, so response time does not reveal which accounts exist.
_DUMMY_HASH = _hasher.hash("keyplane-no-such-user")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-time check; False on mismatch or on a malformed hash."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def burn_dummy_verify(password: str) -> None:
    """Spend the time of one verification, for a login whose email matched no account."""
    verify_password(_DUMMY_HASH, password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = resources.files("keyplane").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def password_problem(password: str, email: str = "") -> str | None:
    """Why ``password`` is not acceptable for a new account, or None when it is."""
    if len(password) < MIN_LENGTH:
        return f"a password needs at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"a password is at most {MAX_LENGTH} characters"
    folded = password.strip().lower()
    if folded in common_passwords():
        return "this password is on the list of common passwords; choose another"
    if len(set(folded)) < 4:
        return "this password repeats too few characters; choose another"
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in folded:
        return "a password must not contain your email address"
    return None
