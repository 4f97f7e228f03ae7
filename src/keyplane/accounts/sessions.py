"""Server-side console sessions.

The cookie carries 32 random bytes; the table stores only their SHA-256, so a copy of the table
cannot be replayed as cookies. A session ends after ``session_idle_s`` without a request or
``session_absolute_s`` after it began, whichever comes first. A session that has passed the
password but not yet the TOTP code (``stage="password"``) lives five minutes and grants nothing but
the code form. Each stage change issues a new token, so a token planted before login is worthless.

Revoking every key and any change to 2FA end every other session of the account
(:func:`end_sessions`, inside the same transaction as the change). Rows of ended sessions are
purged as new ones are made: the account's own, and a bounded batch of anyone's, at each log-in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from keyplane.accounts.errors import LoginRequired, SessionExpired
from keyplane.accounts.models import AccountSession, User
from keyplane.db import Database, utcnow
from keyplane.settings import Settings

PENDING_TTL = dt.timedelta(minutes=5)
# last_seen_at is written at most this often, so browsing does not write on every request.
_TOUCH_EVERY = dt.timedelta(seconds=30)
# At most this many expired rows of other accounts are deleted per new session: a log-in never
# pays for a backlog, and steady log-ins keep the table to about the sessions still alive.
PURGE_BATCH = 100


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def end_sessions(s: Session, user_id: int, *, keep: str | None = None) -> int:
    """In the caller's transaction, end every session of the user except the one whose cookie
    token is ``keep`` (the session that asked for the change); returns how many ended."""
    stmt = delete(AccountSession).where(AccountSession.user_id == user_id)
    if keep:
        stmt = stmt.where(AccountSession.token_hash != token_hash(keep))
    return int(s.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SessionInfo:
    user_id: int
    email: str
    stage: str  # "password" (2FA pending) or "full"
    csrf_token: str
    expires_at: dt.datetime

    def __repr__(self) -> str:
        return f"SessionInfo(user_id={self.user_id}, stage={self.stage!r})"

    @property
    def full(self) -> bool:
        return self.stage == "full"


class SessionService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.idle = dt.timedelta(seconds=settings.session_idle_s)
        self.absolute = dt.timedelta(seconds=settings.session_absolute_s)

    def create(
        self, user_id: int, *, stage: str, ip: str | None, user_agent: str = "", now: dt.datetime | None = None
    ) -> str:
        """Start a session; returns the cookie token (shown to the browser only)."""
        now = now or utcnow()
        token = secrets.token_urlsafe(32)
        ttl = self.absolute if stage == "full" else min(PENDING_TTL, self.absolute)
        with self.db.transaction() as s:
            self._purge(s, user_id, now)
            s.add(
                AccountSession(
                    token_hash=token_hash(token),
                    user_id=user_id,
                    stage=stage,
                    csrf_token=secrets.token_urlsafe(32),
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + ttl,
                    ip=ip,
                    user_agent=user_agent[:200],
                )
            )
        return token

    def load(self, token: str | None, now: dt.datetime | None = None) -> SessionInfo:
        """The live session for a cookie token. Raises LoginRequired, or SessionExpired."""
        if not token:
            raise LoginRequired()
        now = now or utcnow()
        digest = token_hash(token)
        with self.db.read() as s:
            row = s.execute(
                select(
                    AccountSession.user_id,
                    AccountSession.stage,
                    AccountSession.csrf_token,
                    AccountSession.expires_at,
                    AccountSession.last_seen_at,
                    User.email,
                )
                .join(User, User.id == AccountSession.user_id)
                .where(AccountSession.token_hash == digest)
            ).first()
        if row is None:
            raise LoginRequired()
        user_id, stage, csrf_token, expires_at, last_seen_at, email = row
        if expires_at <= now or last_seen_at + self.idle <= now:
            self.end(token)
            raise SessionExpired()
        if now - last_seen_at >= _TOUCH_EVERY:
            with self.db.transaction() as s:
                s.execute(update(AccountSession).where(AccountSession.token_hash == digest).values(last_seen_at=now))
        return SessionInfo(user_id, email, stage, csrf_token, expires_at)

    def promote(self, token: str, *, ip: str | None, user_agent: str = "", now: dt.datetime | None = None) -> str:
        """Replace a password-stage session with a full one under a new token."""
        info = self.load(token, now)
        self.end(token)
        return self.create(info.user_id, stage="full", ip=ip, user_agent=user_agent, now=now)

    def end(self, token: str) -> None:
        with self.db.transaction() as s:
            s.execute(delete(AccountSession).where(AccountSession.token_hash == token_hash(token)))

    def _ended(self, now: dt.datetime) -> Any:
        return (AccountSession.expires_at <= now) | (AccountSession.last_seen_at <= now - self.idle)

    def _purge(self, s: Session, user_id: int, now: dt.datetime) -> int:
        """Delete the user's ended sessions (few, by the user_id index) and at most PURGE_BATCH of
        anyone else's. Rows another transaction is purging are skipped (PostgreSQL), so concurrent
        log-ins never wait on each other here."""
        mine = delete(AccountSession).where(AccountSession.user_id == user_id, self._ended(now))
        count = int(s.execute(mine).rowcount or 0)  # type: ignore[attr-defined]
        batch = (
            select(AccountSession.token_hash)
            .where(self._ended(now))
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        hashes = list(s.execute(batch).scalars())
        if hashes:
            s.execute(delete(AccountSession).where(AccountSession.token_hash.in_(hashes)))
            count += len(hashes)
        return count
