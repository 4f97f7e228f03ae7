"""Sign-up, log-in (password, then a TOTP or recovery code once 2FA is on), log-out and step-up
checks: what the console and ``/v1/account`` call. (The account's activity, which spans its keys,
is keys/activity.py: accounts sits below keys.)

Login attempts are throttled per email and per client IP; only failures count. A wrong email and a
wrong password give the same message and cost the same argon2 time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NoReturn

from keyplane.accounts.errors import InvalidCredentials, LoginRequired, TotpInvalid, TwoFactorRequired
from keyplane.accounts.events import AccountEvent
from keyplane.accounts.passwords import burn_dummy_verify, hash_password, needs_rehash, verify_password
from keyplane.accounts.service import AccountService, UserInfo
from keyplane.accounts.sessions import SessionInfo, SessionService
from keyplane.accounts.stepup import StepUp
from keyplane.accounts.throttle import AttemptThrottle
from keyplane.accounts.twofactor import TwoFactorService
from keyplane.audit.service import record as audit
from keyplane.db import Database
from keyplane.masterkeys import MasterKeys
from keyplane.parsing import bad_character
from keyplane.settings import Settings


@dataclass(frozen=True, slots=True)
class LoginResult:
    user: UserInfo
    token: str  # the new session cookie
    needs_code: bool  # True: the session is at the password stage until a TOTP code is given

    def __repr__(self) -> str:
        return f"LoginResult(user_id={self.user.id}, needs_code={self.needs_code})"


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
        proof = self.twofactor.verify(info.user_id, code, ip=ip, allow_recovery=True)
        new_token = self.sessions.promote(token, ip=ip, user_agent=user_agent)
        self._record(AccountEvent.LOGIN_SUCCEEDED, info.user_id, ip, {"second_factor": proof.how})
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

    def verify_step_up(self, user_id: int, code: str, *, ip: str | None) -> StepUp:
        """A fresh TOTP code (never a recovery code) for a change that widens what the account or
        its keys can do. Returns the StepUp proof to hand to that change.

        Raises TwoFactorRequired (2FA not on), TotpInvalid (missing, wrong or reused) or Throttled.
        """
        if not (code or "").strip():
            if not self.twofactor.enabled(user_id):
                raise TwoFactorRequired()
            raise TotpInvalid("enter the 6-digit code from your authenticator app")
        return self.twofactor.verify(user_id, code, ip=ip, allow_recovery=False)

    def new_recovery_codes(
        self, user_id: int, code: str, *, ip: str | None, keep_session: str | None = None
    ) -> list[str]:
        """A new set of recovery codes behind a fresh TOTP code (the old set stops working). Every
        session of the account but ``keep_session`` ends. Raises what TwoFactorService.verify raises."""
        proof = self.twofactor.verify(user_id, code, ip=ip, allow_recovery=False)
        return self.twofactor.regenerate_codes(user_id, proof, ip=ip, keep_session=keep_session)

    def _record(self, event: AccountEvent, user_id: int | None, ip: str | None, data: dict[str, Any]) -> None:
        with self.db.transaction() as s:
            audit(s, event, actor=f"user:{user_id}" if user_id else "anonymous", ip=ip, user_id=user_id, data=data)

    def _login_failed(self, email: str, user_id: int | None, ip: str | None) -> NoReturn:
        self.throttle.failed(self.throttle.login, email, ip)
        if user_id is not None:
            self._record(AccountEvent.LOGIN_FAILED, user_id, ip, {})
        raise InvalidCredentials()
