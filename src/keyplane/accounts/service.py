"""Users: sign-up, lookup and password checks. The service owns the transaction and writes the audit event."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from keyplane.accounts.errors import EmailTaken, InvalidEmail, WeakPassword
from keyplane.accounts.models import User
from keyplane.accounts.passwords import MIN_LENGTH, hash_password, password_problem
from keyplane.audit.events import EventType
from keyplane.audit.service import record as audit
from keyplane.db import Database
from keyplane.parsing import bad_character, shown

EMAIL_MAX = 320  # the column's length (RFC 5321's limit on a path)
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")

__all__ = ["MIN_LENGTH", "AccountService", "UserInfo", "check_password", "normalise_email"]


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    email: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "email": self.email}


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if bad_character(value) is not None:
        raise InvalidEmail("an email address cannot contain control characters")
    if len(value) > EMAIL_MAX or not _EMAIL_RE.fullmatch(value):
        raise InvalidEmail(f"{shown(email.strip(), 80)} is not an email address (at most {EMAIL_MAX} characters)")
    return value


def check_password(password: str, email: str = "") -> None:
    """Raise WeakPassword when ``password`` is too short, too common, or contains the email."""
    if bad_character(password) is not None:
        raise WeakPassword("a password cannot contain control characters")
    problem = password_problem(password, email)
    if problem:
        raise WeakPassword(problem)


class AccountService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_user(self, email: str, password: str, *, actor: str = "admin:cli", ip: str | None = None) -> UserInfo:
        """Create a user. Raises InvalidEmail, WeakPassword or EmailTaken."""
        address = normalise_email(email)
        check_password(password, address)
        pw_hash = hash_password(password)
        try:
            with self.db.transaction() as s:
                if s.execute(select(User.id).where(User.email == address)).first() is not None:
                    raise EmailTaken(address)
                user = User(email=address, password_hash=pw_hash)
                s.add(user)
                s.flush()
                audit(s, EventType.USER_CREATED, actor=actor, ip=ip, user_id=user.id, data={"email": address})
                return UserInfo(user.id, user.email)
        except IntegrityError as e:  # a concurrent sign-up with the same email won the race
            raise EmailTaken(address) from e

    def get_by_email(self, email: str) -> UserInfo | None:
        with self.db.read() as s:
            user = s.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()
            return None if user is None else UserInfo(user.id, user.email)

    def password_hash_for(self, email: str) -> tuple[UserInfo, str] | None:
        """The user and their password hash, for the login check only."""
        with self.db.read() as s:
            user = s.execute(select(User).where(User.email == email.strip().lower())).scalar_one_or_none()
            return None if user is None else (UserInfo(user.id, user.email), user.password_hash)

    def set_password_hash(self, user_id: int, pw_hash: str) -> None:
        with self.db.transaction() as s:
            user = s.get(User, user_id)
            if user is not None:
                user.password_hash = pw_hash
