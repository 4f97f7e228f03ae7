"""Sign-up, log-in (password, then a TOTP or recovery code once 2FA is on), log-out, step-up
checks and the account's activity: what the console and ``/v1/account`` call.

Login attempts are throttled per email and per client IP; only failures count. A wrong email and a
wrong password give the same message and cost the same argon2 time.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import or_, select

from keyplane.accounts.errors import InvalidCredentials, LoginRequired, TotpInvalid, TwoFactorRequired
from keyplane.accounts.events import AccountEvent
from keyplane.accounts.passwords import burn_dummy_verify, hash_password, needs_rehash, verify_password
from keyplane.accounts.service import AccountService, UserInfo
from keyplane.accounts.sessions import SessionInfo, SessionService
from keyplane.accounts.throttle import AttemptThrottle
from keyplane.accounts.twofactor import TwoFactorService
from keyplane.audit.models import AuditEvent
from keyplane.audit.service import record as audit
from keyplane.db import Database
from keyplane.keys.master import MasterKeys
from keyplane.keys.models import ApiKey
from keyplane.parsing import bad_character
from keyplane.settings import Settings


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: UserInfo
    token: str  # the new session cookie
    needs_code: bool  # True: the session is at the password stage until a TOTP code is given

    def __repr__(self) -> str:
        return f"LoginResult(user_id={self.user.id}, needs_code={self.needs_code})"


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    seq: int
    created_at: dt.datetime
    event_type: str
    actor: str
    key_id: str | None
    ip: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "created_at": self.created_at.isoformat(),
            "type": self.event_type,
            "actor": self.actor,
            "api_key": self.key_id,
            "ip": self.ip,
            "data": self.data,
        }


class Identity:
    def __init__(self, db: Database, settings: Settings, master: MasterKeys, accounts: AccountService) -> None:
        self.db = db
        self.settings = settings
        self.accounts = accounts
        self.throttle = AttemptThrottle(settings)
        self.sessions = SessionService(db, settings)
        self.twofactor = TwoFactorService(db, settings, master, self.throttle)

    def signup(self, email: str, password: str, *, ip: str | None, user_agent: str = "") -> tuple[UserInfo, str]:
        """Create the account and a session for it. Raises InvalidEmail, WeakPassword, EmailTaken."""
        user = self.accounts.create_user(email, password, actor="console:signup", ip=ip)
        token = self.sessions.create(user.id, stage="full", ip=ip, user_agent=user_agent)
        return user, token

    def login(self, email: str, password: str, *, ip: str | None, user_agent: str = "") -> LoginResult:
        """Check the password. Raises Throttled or InvalidCredentials (same message for a wrong email)."""
        who = email.strip().lower()[:320]
        self.throttle.check(self.throttle.login, who, ip, field="password")
        # No account has such an address (sign-up refuses control characters), and it must not
        # reach the database (PostgreSQL refuses NUL): the same answer as a wrong email.
        found = None if bad_character(who) is not None else self.accounts.password_hash_for(who)
        if found is None:
            burn_dummy_verify(password)
            self._login_failed(who, None, ip)
        user, pw_hash = found
        if not verify_password(pw_hash, password):
            self._login_failed(who, user.id, ip)
        if needs_rehash(pw_hash):
            self.accounts.set_password_hash(user.id, hash_password(password))
        needs_code = self.twofactor.enabled(user.id)
        stage = "password" if needs_code else "full"
        token = self.sessions.create(user.id, stage=stage, ip=ip, user_agent=user_agent)
        if not needs_code:
            self._record(AccountEvent.LOGIN_SUCCEEDED, user.id, ip, {"second_factor": None})
        return LoginResult(user, token, needs_code)

    def finish_login(self, token: str, code: str, *, ip: str | None, user_agent: str = "") -> str:
        """Second step: a TOTP or recovery code. Returns the full session's new token."""
        info = self.sessions.load(token)
        if info.full:
            return token
        used = self.twofactor.verify(info.user_id, code, ip=ip, allow_recovery=True)
        new_token = self.sessions.promote(token, ip=ip, user_agent=user_agent)
        self._record(AccountEvent.LOGIN_SUCCEEDED, info.user_id, ip, {"second_factor": used})
        return new_token

    def logout(self, token: str, *, ip: str | None) -> None:
        try:
            info = self.sessions.load(token)
        except LoginRequired:
            return
        self.sessions.end(token)
        self._record(AccountEvent.LOGGED_OUT, info.user_id, ip, {})

    def session(self, token: str | None) -> SessionInfo:
        return self.sessions.load(token)

    def verify_step_up(self, user_id: int, code: str, *, ip: str | None) -> None:
        """A fresh TOTP code for a change that widens what the account's keys can do.

        Raises TwoFactorRequired (2FA not on), TotpInvalid (missing, wrong or reused) or Throttled.
        """
        if not (code or "").strip():
            if not self.twofactor.enabled(user_id):
                raise TwoFactorRequired()
            raise TotpInvalid("enter the 6-digit code from your authenticator app")
        self.twofactor.verify(user_id, code, ip=ip, allow_recovery=False)

    def activity(
        self, user_id: int, *, limit: int = 200, before: int | None = None, key_id: str | None = None
    ) -> list[ActivityEvent]:
        """The account's audit events, newest first: its own events and any event on one of its keys."""
        with self.db.read() as s:
            key_ids = select(ApiKey.public_id).where(ApiKey.user_id == user_id).scalar_subquery()
            stmt = select(AuditEvent).where(or_(AuditEvent.user_id == user_id, AuditEvent.key_id.in_(key_ids)))
            if before is not None:
                stmt = stmt.where(AuditEvent.seq < before)
            if key_id is not None:
                stmt = stmt.where(AuditEvent.key_id == key_id)
            rows = s.execute(stmt.order_by(AuditEvent.seq.desc()).limit(max(1, min(limit, 500)))).scalars()
            return [
                ActivityEvent(e.seq, e.created_at, e.event_type, e.actor, e.key_id, e.ip, json.loads(e.data or "{}"))
                for e in rows
            ]

    def _record(self, event: AccountEvent, user_id: int | None, ip: str | None, data: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            audit(s, event, actor=f"user:{user_id}" if user_id else "anonymous", ip=ip, user_id=user_id, data=data)

    def _login_failed(self, email: str, user_id: int | None, ip: str | None) -> NoReturn:
        self.throttle.failed(self.throttle.login, email, ip)
        if user_id is not None:
            self._record(AccountEvent.LOGIN_FAILED, user_id, ip, {})
        raise InvalidCredentials()
