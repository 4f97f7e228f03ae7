"""Sessions end when they should: on any 2FA change and on revoke-all (all but the caller's), and
the rows of ended sessions are purged as new sessions are made."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import pytest
from sqlalchemy import func, select

from keyplane.accounts import sessions as sessions_module
from keyplane.accounts import totp
from keyplane.accounts.errors import LoginRequired
from keyplane.accounts.identity import Identity
from keyplane.accounts.models import AccountSession
from keyplane.accounts.stepup import StepUp
from keyplane.audit.models import AuditEvent
from keyplane.keys.manage import KeyManager
from keyplane.keys.service import Actor
from keyplane.services import build_services
from kptest.backends import db_scope

PW = "orbit-lantern-meadow-42"


@pytest.fixture(scope=db_scope("module"))
def svc(make_settings):
    s = build_services(make_settings(session_idle_s=600, session_absolute_s=3600, totp_drift_steps=10))
    yield s
    s.close()


@pytest.fixture
def ident(svc) -> Identity:
    assert svc.identity is not None
    return svc.identity


class Codes:
    """Fresh codes for one secret: each a new time step within the server's drift."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.step = totp.counter_at(dt.datetime.now(dt.UTC).timestamp()) - 5

    def __call__(self) -> str:
        self.step += 1
        return totp.totp_at(self.secret, self.step)


def _alive(ident: Identity, token: str) -> bool:
    try:
        ident.session(token)
    except LoginRequired:
        return False
    return True


def _last_event(svc, user_id: int, event_type: str) -> dict[str, object]:
    with svc.db.read() as s:
        data = s.execute(
            select(AuditEvent.data)
            .where(AuditEvent.user_id == user_id, AuditEvent.event_type == event_type)
            .order_by(AuditEvent.seq.desc())
            .limit(1)
        ).scalar_one()
    return dict(json.loads(data or "{}"))


def _enrolled(ident: Identity) -> tuple[int, str, str, Codes]:
    """A user with 2FA on, the session that enrolled, and a fresh second full session."""
    address = f"e{secrets.token_hex(6)}@example.com"
    user, mine = ident.signup(address, PW, ip=None)
    codes = Codes(ident.twofactor.begin(user.id).secret)
    ident.twofactor.confirm(user.id, codes(), ip=None, keep_session=mine)
    pending = ident.login(address, PW, ip=None)
    other = ident.finish_login(pending.token, codes(), ip=None)
    return user.id, mine, other, codes


def test_enrolling_2fa_ends_every_other_session(ident, svc):
    address = f"e{secrets.token_hex(6)}@example.com"
    user, mine = ident.signup(address, PW, ip=None)
    other = ident.login(address, PW, ip=None).token  # 2FA not on yet: a full session
    half = ident.login(address, PW, ip=None).token
    assert _alive(ident, other)
    codes = Codes(ident.twofactor.begin(user.id).secret)
    assert _alive(ident, other)  # starting enrolment changes nothing yet
    ident.twofactor.confirm(user.id, codes(), ip=None, keep_session=mine)
    assert _alive(ident, mine)
    assert not _alive(ident, other) and not _alive(ident, half)
    assert _last_event(svc, user.id, "account:totp:enrolled") == {"sessions_ended": 2}


def test_new_recovery_codes_end_every_other_session(ident, svc):
    user_id, mine, other, codes = _enrolled(ident)
    assert _alive(ident, other)
    ident.new_recovery_codes(user_id, codes(), ip=None, keep_session=mine)
    assert _alive(ident, mine) and not _alive(ident, other)
    assert _last_event(svc, user_id, "account:recovery_code:regenerated") == {"sessions_ended": 1, "step_up": "totp"}


def test_without_a_session_to_keep_a_2fa_change_ends_them_all(ident):
    user_id, mine, other, codes = _enrolled(ident)
    ident.new_recovery_codes(user_id, codes(), ip=None)
    assert not _alive(ident, mine) and not _alive(ident, other)


def test_revoke_all_ends_every_other_session(ident, svc):
    user_id, mine, other, codes = _enrolled(ident)
    _, stranger, _, _ = _enrolled(ident)
    key = svc.keys.create(user_id, scopes=("read",), step_up=StepUp.operator())
    actions = KeyManager(svc.keys, ident)
    ids = actions.revoke_all(user_id, codes(), confirmed=True, actor=Actor(f"user:{user_id}"), keep_session=mine)
    assert ids == [key.info.api_key]
    assert _alive(ident, mine) and not _alive(ident, other)
    assert _alive(ident, stranger)  # another account's sessions are untouched
    assert _last_event(svc, user_id, "key:api_key:revoked_all")["sessions_ended"] == 1


def _sessions_of(svc, user_id: int) -> int:
    with svc.db.read() as s:
        count = s.execute(
            select(func.count()).select_from(AccountSession).where(AccountSession.user_id == user_id)
        ).scalar_one()
    return int(count)


def test_ended_sessions_are_purged_as_new_ones_are_made(ident, svc, monkeypatch):
    """Time is passed in, far in the past, so that only this test's rows have ended by then."""
    monkeypatch.setattr(sessions_module, "PURGE_BATCH", 2)
    users = [ident.signup(f"p{secrets.token_hex(6)}@example.com", PW, ip=None)[0].id for _ in range(3)]
    x, y, z = users
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    live = ident.sessions.create(x, stage="full", ip=None, now=t0 + dt.timedelta(minutes=55))
    stale = [ident.sessions.create(x, stage="full", ip=None, now=t0) for _ in range(5)]  # idle after 10 min
    ident.sessions.create(y, stage="password", ip=None, now=t0)  # a pending login: 5 minutes
    # Each user also has the session of their sign-up, alive until an hour from now.
    assert _sessions_of(svc, x) == 7 and _sessions_of(svc, y) == 2

    later = t0 + dt.timedelta(minutes=61)
    ident.sessions.create(y, stage="full", ip=None, now=later)
    # y's own ended row is gone, and at most PURGE_BATCH of anyone else's.
    assert _sessions_of(svc, y) == 2
    assert _sessions_of(svc, x) == 5
    ident.sessions.create(z, stage="full", ip=None, now=later)
    ident.sessions.create(z, stage="full", ip=None, now=later)
    # Two rows a time: x's five ended rows are gone; its sign-up session and `live` are left.
    assert _sessions_of(svc, x) == 2
    with svc.db.read() as s:
        left = set(s.execute(select(AccountSession.token_hash).where(AccountSession.user_id == x)).scalars())
    assert sessions_module.token_hash(live) in left
    assert not left & {sessions_module.token_hash(t) for t in stale}
