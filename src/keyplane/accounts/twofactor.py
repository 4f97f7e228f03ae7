"""TOTP enrolment, verification (login and step-up) and recovery codes.

:meth:`TwoFactorService.verify` is the verifier: it returns a :class:`StepUp` proof
(accounts/stepup.py), the only value a widening accepts; nothing else makes one from a code.

The TOTP secret is encrypted under the master keyring with associated data ``totp:<user id>``, so
a ciphertext moved to another account's row does not open. Verification locks the credential row,
checks the code against the last accepted time step (no replay), and stores the new step in the same
transaction, so two concurrent requests with one code cannot both pass.

A failed attempt is counted by the throttle and written to the audit log in its own transaction
(the verifying transaction rolls back).

A change to an account's 2FA (enrolment confirmed, recovery codes replaced) ends every other session
of the account in the same transaction: a session opened by someone else before the change must not
outlive it. The caller passes its own session token as ``keep_session`` to stay signed in.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from keyplane.accounts import totp
from keyplane.accounts.errors import AlreadyEnrolled, TotpInvalid, TwoFactorRequired
from keyplane.accounts.events import AccountEvent
from keyplane.accounts.models import RecoveryCode, TotpCredential, User
from keyplane.accounts.sessions import end_sessions
from keyplane.accounts.stepup import StepUp, require_step_up
from keyplane.accounts.throttle import AttemptThrottle
from keyplane.audit.service import record as audit
from keyplane.crypto.secretbox import totp_secret_aad as _aad
from keyplane.db import Database, utcnow
from keyplane.masterkeys import MasterKeys
from keyplane.settings import Settings

log = logging.getLogger("keyplane.accounts")


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What the enrol page shows: the QR code and the same key for typing by hand."""

    secret: str
    uri: str
    qr_svg: str

    def __repr__(self) -> str:
        return "Enrolment(secret=<hidden>)"

    @property
    def manual_key(self) -> str:
        return totp.grouped(self.secret)


@dataclass(frozen=True, slots=True)
class TwoFactorStatus:
    enabled: bool
    recovery_codes_left: int


class TwoFactorService:
    def __init__(self, db: Database, settings: Settings, master: MasterKeys, throttle: AttemptThrottle) -> None:
        self.db = db
        self.settings = settings
        self.master = master
        self.throttle = throttle

    def _secret(self, row: TotpCredential) -> str:
        return self.master.decrypt(row.secret_ciphertext, _aad(row.user_id)).decode("ascii")

    def status(self, user_id: int) -> TwoFactorStatus:
        with self.db.read() as s:
            confirmed = s.execute(
                select(TotpCredential.confirmed_at).where(TotpCredential.user_id == user_id)
            ).scalar_one_or_none()
            left = s.execute(
                select(func.count())
                .select_from(RecoveryCode)
                .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
            ).scalar_one()
        return TwoFactorStatus(confirmed is not None, int(left))

    def enabled(self, user_id: int) -> bool:
        return self.status(user_id).enabled

    def begin(self, user_id: int, *, now: dt.datetime | None = None) -> Enrolment:
        """Start (or restart) enrolment with a fresh secret. Raises AlreadyEnrolled."""
        now = now or utcnow()
        secret = totp.new_totp_secret()
        with self.db.transaction() as s:
            user = s.get(User, user_id)
            if user is None:
                raise TwoFactorRequired("no such account")
            row = s.get(TotpCredential, user_id, with_for_update=True)
            if row is not None and row.confirmed_at is not None:
                raise AlreadyEnrolled()
            ciphertext = self.master.encrypt(s, secret.encode("ascii"), _aad(user_id))
            if row is None:
                s.add(TotpCredential(user_id=user_id, secret_ciphertext=ciphertext, created_at=now))
            else:
                row.secret_ciphertext, row.created_at, row.last_counter = ciphertext, now, None
            email = user.email
        uri = totp.provisioning_uri(secret, email, self.settings.totp_issuer)
        return Enrolment(secret, uri, totp.qr_svg(uri))

    def pending(self, user_id: int) -> Enrolment | None:
        """The enrolment in progress, to show the same QR code again after a wrong code."""
        with self.db.read() as s:
            row = s.get(TotpCredential, user_id)
            user = s.get(User, user_id)
            if row is None or row.confirmed_at is not None or user is None:
                return None
            secret, email = self._secret(row), user.email
        uri = totp.provisioning_uri(secret, email, self.settings.totp_issuer)
        return Enrolment(secret, uri, totp.qr_svg(uri))

    def confirm(
        self,
        user_id: int,
        code: str,
        *,
        ip: str | None,
        keep_session: str | None = None,
        now: dt.datetime | None = None,
    ) -> list[str]:
        """Finish enrolment with a first code; returns the 10 recovery codes (shown once).
        Every session of the account but ``keep_session`` ends."""
        now = now or utcnow()
        self.throttle.check(self.throttle.totp, str(user_id), ip, field="totp")
        codes: list[str] = []
        with self.db.transaction() as s:
            row = s.get(TotpCredential, user_id, with_for_update=True)
            if row is None:
                raise TwoFactorRequired("start enrolment first")
            if row.confirmed_at is not None:
                raise AlreadyEnrolled()
            secret = self._secret(row)
            try:
                row.last_counter = totp.verify_totp(
                    secret, code, last_counter=None, now=now.timestamp(), drift=self.settings.totp_drift_steps
                )
            except totp.TotpRejected as e:
                failure = str(e)
            else:
                failure = ""
                row.confirmed_at = now
                codes = self._new_codes(s, user_id, secret, now)
                ended = end_sessions(s, user_id, keep=keep_session)
                _audit(s, AccountEvent.TOTP_ENROLLED, user_id, ip, {"sessions_ended": ended}, now)
        if failure:
            self._failed(user_id, ip, failure, now)
        return codes

    def verify(
        self,
        user_id: int,
        code: str,
        *,
        ip: str | None,
        allow_recovery: bool = True,
        now: dt.datetime | None = None,
    ) -> StepUp:
        """Check a fresh TOTP code (or, if allowed, a recovery code, which is burned).

        Returns the StepUp proof (``how`` is "totp" or "recovery"). Raises TwoFactorRequired (not
        enrolled), TotpInvalid (wrong, malformed or reused) or Throttled.
        """
        now = now or utcnow()
        self.throttle.check(self.throttle.totp, str(user_id), ip, field="totp")
        failure = ""
        used: Literal["totp", "recovery"] = "totp"
        with self.db.transaction() as s:
            row = s.get(TotpCredential, user_id, with_for_update=True)
            if row is None or row.confirmed_at is None:
                raise TwoFactorRequired()
            secret = self._secret(row)
            if allow_recovery and totp.looks_like_recovery_code(code):
                used = "recovery"
                digest = totp.recovery_code_hash(totp.recovery_key(secret), user_id, code)
                hit = s.execute(
                    select(RecoveryCode)
                    .where(
                        RecoveryCode.user_id == user_id,
                        RecoveryCode.code_hash == digest,
                        RecoveryCode.used_at.is_(None),
                    )
                    .with_for_update()
                ).scalar_one_or_none()
                if hit is None:
                    failure = "that recovery code is wrong or was already used"
                else:
                    hit.used_at = now
                    _audit(s, AccountEvent.RECOVERY_CODE_USED, user_id, ip, None, now)
            else:
                try:
                    row.last_counter = totp.verify_totp(
                        secret,
                        code,
                        last_counter=row.last_counter,
                        now=now.timestamp(),
                        drift=self.settings.totp_drift_steps,
                    )
                except totp.TotpRejected as e:
                    failure = str(e)
        if failure:
            self._failed(user_id, ip, failure, now)
        return StepUp._from_verified_code(user_id, used, now)

    def regenerate_codes(
        self, user_id: int, step_up: StepUp | None, *, ip: str | None, keep_session: str | None = None
    ) -> list[str]:
        """New recovery codes (the old ones stop working). Needs a fresh StepUp of ``user_id``
        (raises StepUpRequired): a new set is a new way in. Every session of the account but
        ``keep_session`` ends."""
        now = utcnow()
        proof = require_step_up(step_up, user_id, reasons=["makes new recovery codes"], now=now)
        with self.db.transaction() as s:
            row = s.get(TotpCredential, user_id)
            if row is None:
                raise TwoFactorRequired()
            codes = self._new_codes(s, user_id, self._secret(row), now)
            ended = end_sessions(s, user_id, keep=keep_session)
            data = {"sessions_ended": ended, "step_up": proof.how}
            _audit(s, AccountEvent.RECOVERY_CODES_REGENERATED, user_id, ip, data, now)
        return codes

    def _new_codes(self, s: Session, user_id: int, secret: str, now: dt.datetime) -> list[str]:
        s.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes = totp.new_recovery_codes()
        key = totp.recovery_key(secret)
        for c in codes:
            s.add(RecoveryCode(user_id=user_id, code_hash=totp.recovery_code_hash(key, user_id, c), created_at=now))
        return codes

    def _failed(self, user_id: int, ip: str | None, reason: str, now: dt.datetime) -> None:
        self.throttle.failed(self.throttle.totp, str(user_id), ip)
        with self.db.transaction() as s:
            _audit(s, AccountEvent.TOTP_FAILED, user_id, ip, {"reason": reason}, now)
        raise TotpInvalid(
            "this code was already used; wait for the next one" if "already" in reason else f"{reason}; try again"
        )


def _audit(
    s: Session, event: AccountEvent, user_id: int, ip: str | None, data: dict[str, Any] | None, now: dt.datetime
) -> None:
    """Record what the account's owner did with their second factor."""
    audit(s, event, actor=f"user:{user_id}", ip=ip, user_id=user_id, data=data, now=now)
