"""Sessions, 2FA and throttling against a real database, with time passed in."""

from __future__ import annotations

import datetime as dt
import secrets

import pytest

from keyplane.accounts import totp
from keyplane.accounts.errors import (
    AlreadyEnrolled,
    InvalidCredentials,
    LoginRequired,
    SessionExpired,
    Throttled,
    TotpInvalid,
    TwoFactorRequired,
)
from keyplane.accounts.identity import Identity
from keyplane.accounts.models import TotpCredential
from keyplane.accounts.throttle import AttemptThrottle
from keyplane.services import build_services
from kptest.backends import db_scope

PW = "orbit-lantern-meadow-42"


@pytest.fixture(scope=db_scope("module"))
def svc(make_settings):
    s = build_services(make_settings(session_idle_s=600, session_absolute_s=3600, totp_limit_per_user="4/minute"))
    yield s
    s.close()


@pytest.fixture
def ident(svc) -> Identity:
    assert svc.identity is not None
    return svc.identity


def email() -> str:
    return f"s{secrets.token_hex(6)}@example.com"


def test_session_idle_and_absolute_expiry(ident):
    user, token = ident.signup(email(), PW, ip="127.0.0.1")
    t0 = dt.datetime.now(dt.UTC)
    assert ident.sessions.load(token, now=t0).user_id == user.id
    assert ident.sessions.load(token, now=t0 + dt.timedelta(seconds=500)).full
    # Touched at +500 s, so +1000 s is within the idle limit of the last request.
    assert ident.sessions.load(token, now=t0 + dt.timedelta(seconds=1000)).full
    with pytest.raises(SessionExpired):
        ident.sessions.load(token, now=t0 + dt.timedelta(seconds=1700))
    with pytest.raises(LoginRequired):
        ident.sessions.load(token, now=t0)  # an expired session is deleted

    _, token2 = ident.signup(email(), PW, ip=None)
    now = t0
    for _ in range(9):  # keep it busy: it still ends at the absolute limit
        now += dt.timedelta(seconds=500)
        if now - t0 >= dt.timedelta(seconds=3600):
            with pytest.raises(SessionExpired):
                ident.sessions.load(token2, now=now)
            break
        ident.sessions.load(token2, now=now)
    else:
        pytest.fail("absolute expiry never hit")


def test_session_table_stores_only_a_hash(ident, svc):
    from sqlalchemy import select

    from keyplane.accounts.models import AccountSession

    _, token = ident.signup(email(), PW, ip=None)
    with svc.db.read() as s:
        hashes = list(s.execute(select(AccountSession.token_hash)).scalars())
    assert token not in hashes
    assert len(token) >= 43


def test_login_stages_and_promotion(ident):
    address = email()
    user, _ = ident.signup(address, PW, ip=None)
    assert ident.login(address, PW, ip=None).needs_code is False
    enrolment = ident.twofactor.begin(user.id)
    with pytest.raises(TotpInvalid):
        ident.twofactor.confirm(user.id, "000000", ip=None)
    now = dt.datetime.now(dt.UTC)
    step = totp.counter_at(now.timestamp())
    codes = ident.twofactor.confirm(user.id, totp.totp_at(enrolment.secret, step), ip=None, now=now)
    assert len(codes) == 10
    with pytest.raises(AlreadyEnrolled):
        ident.twofactor.begin(user.id)

    result = ident.login(address.upper(), PW, ip=None)
    assert result.needs_code
    assert not ident.session(result.token).full
    with pytest.raises(TotpInvalid, match="already used"):
        ident.finish_login(result.token, totp.totp_at(enrolment.secret, step), ip=None)
    full = ident.finish_login(result.token, totp.totp_at(enrolment.secret, step + 1), ip=None)
    assert full != result.token and ident.session(full).full
    with pytest.raises(LoginRequired):
        ident.session(result.token)  # the password-stage token is gone


def test_wrong_password_and_unknown_email_look_the_same(ident):
    address = email()
    ident.signup(address, PW, ip=None)
    with pytest.raises(InvalidCredentials) as a:
        ident.login(address, "wrong-password-1", ip=None)
    with pytest.raises(InvalidCredentials) as b:
        ident.login(email(), "wrong-password-1", ip=None)
    assert a.value.message == b.value.message


def test_step_up_requires_enrolment_and_a_code(ident):
    user, _ = ident.signup(email(), PW, ip=None)
    with pytest.raises(TwoFactorRequired):
        ident.verify_step_up(user.id, "", ip=None)
    enrolment = ident.twofactor.begin(user.id)
    now = dt.datetime.now(dt.UTC)
    ident.twofactor.confirm(user.id, totp.totp_at(enrolment.secret, totp.counter_at(now.timestamp())), ip=None, now=now)
    with pytest.raises(TotpInvalid, match="6-digit"):
        ident.verify_step_up(user.id, "", ip=None)


def test_totp_secret_is_encrypted_with_its_own_associated_data(ident, svc):
    user, _ = ident.signup(email(), PW, ip=None)
    other, _ = ident.signup(email(), PW, ip=None)
    enrolment = ident.twofactor.begin(user.id)
    ident.twofactor.begin(other.id)
    with svc.db.transaction() as s:
        mine = s.get(TotpCredential, user.id)
        theirs = s.get(TotpCredential, other.id)
        assert enrolment.secret not in mine.secret_ciphertext
        theirs.secret_ciphertext = mine.secret_ciphertext  # moved to another account's row...
    from keyplane.crypto.secretbox import SecretBoxError

    with pytest.raises(SecretBoxError):  # ...it does not open there
        ident.twofactor.pending(other.id)
    assert "<hidden>" in repr(enrolment)
    with svc.db.transaction() as s:
        s.delete(s.get(TotpCredential, other.id))


def test_totp_failures_are_throttled_per_user(ident):
    user, _ = ident.signup(email(), PW, ip=None)
    enrolment = ident.twofactor.begin(user.id)
    now = dt.datetime.now(dt.UTC)
    step = totp.counter_at(now.timestamp())
    ident.twofactor.confirm(user.id, totp.totp_at(enrolment.secret, step), ip=None, now=now)
    for _ in range(4):
        with pytest.raises(TotpInvalid):
            ident.twofactor.verify(user.id, "000000", ip=f"10.0.0.{secrets.randbelow(200)}")
    with pytest.raises(Throttled) as e:
        ident.twofactor.verify(user.id, totp.totp_at(enrolment.secret, step + 1), ip="10.9.9.9")
    assert e.value.retry_after_s >= 1 and e.value.headers["Retry-After"]


def test_throttle_counts_only_failures_per_ip(make_settings):
    t = AttemptThrottle(make_settings(redis_url=None, login_limit_per_user="2/minute", login_limit_per_ip="3/minute"))
    t.check(t.login, "a", "1.1.1.1")
    t.failed(t.login, "a", "1.1.1.1")
    t.failed(t.login, "b", "1.1.1.1")
    t.failed(t.login, "c", "1.1.1.1")
    with pytest.raises(Throttled):
        t.check(t.login, "d", "1.1.1.1")  # the IP is used up
    t.check(t.login, "d", "2.2.2.2")  # another IP is not


def test_throttle_fails_closed_when_redis_is_down(make_settings):
    from keyplane.errors import ServiceUnavailable
    from kptest.server import free_port

    t = AttemptThrottle(make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(ServiceUnavailable):
        t.check(t.login, "a", "1.1.1.1")
    with pytest.raises(ServiceUnavailable):
        t.failed(t.totp, "a", "1.1.1.1")
