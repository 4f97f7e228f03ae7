"""Master-key rotation (keys/rotation.py) through the services, two processes' worth of them on one
database and one keyfile: add, rotate, drop, and what a process that has not re-read the keyfile
does meanwhile. Each test gets a database of its own (a rotation re-encrypts every secret in it)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select

from keyplane.accounts import totp
from keyplane.accounts.models import TotpCredential
from keyplane.accounts.stepup import StepUp
from keyplane.crypto import keyring as kr
from keyplane.crypto.secretbox import api_secret_aad, token_key_id
from keyplane.keys.models import ApiKey
from keyplane.keys.rotation import MasterKeyRotation
from keyplane.masterkeys import MasterKeyError, MasterKeyInUse
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.backends import Backend, postgres_database

PW = "a long enough password"


@pytest.fixture
def fresh(kp_backend: Backend, tmp_path: Path) -> Iterator[Callable[..., Services]]:
    """Services on a database of this test's own; every call is another process on it."""
    with ExitStack() as stack:
        url = stack.enter_context(postgres_database()) if kp_backend.postgres else None
        data = tmp_path / "data"

        def make(**overrides: object) -> Services:
            values: dict[str, object] = {"data_dir": data, "database_url": url, "redis_url": None}
            if url is not None and "master_keys" not in overrides:
                values["master_keys_file"] = tmp_path / "master.keys"
            values.update(overrides)
            svc = build_services(Settings(**values))  # type: ignore[arg-type]
            stack.callback(svc.close)
            return svc

        if url is not None:
            kr.load_or_create_keyfile(tmp_path / "master.keys")
        yield make


def enrolled(svc: Services) -> tuple[int, str]:
    assert svc.identity is not None
    user = svc.accounts.create_user(f"r{secrets.token_hex(5)}@example.com", PW)
    enrolment = svc.identity.twofactor.begin(user.id)
    now = dt.datetime.now(dt.UTC)
    svc.identity.twofactor.confirm(user.id, totp.totp_at(enrolment.secret, totp.counter_at(now.timestamp())), ip=None)
    return user.id, enrolment.secret


def next_code_ok(svc: Services, user_id: int, secret: str, steps_ahead: int) -> None:
    assert svc.identity is not None
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30 * steps_ahead)
    code = totp.totp_at(secret, totp.counter_at(now.timestamp()))
    assert svc.identity.twofactor.verify(user_id, code, ip=None, allow_recovery=False, now=now).how == "totp"


def key_ids_in_use(svc: Services) -> set[str]:
    with svc.db.read() as s:
        tokens = [t for t in s.execute(select(ApiKey.secret_ciphertext)).scalars() if t]
        tokens += list(s.execute(select(TotpCredential.secret_ciphertext)).scalars())
    return {token_key_id(t) for t in tokens}


def test_add_rotate_drop_with_a_second_process_that_has_not_reread_the_keyfile(fresh):
    a, b = fresh(), fresh()  # b holds the keyring as it was at its start
    rotation = MasterKeyRotation(a.db, a.master)
    old = rotation.status().active
    user_id, secret = enrolled(b)
    issued = b.keys.create(user_id, step_up=StepUp.operator())

    new = rotation.add_key()
    # Added, not active: every process still seals under the old key.
    assert rotation.status().active == old and new in rotation.status().keys
    assert token_key_id(_cipher(b, b.keys.create(user_id, step_up=StepUp.operator()).info.api_key)) == old

    result = rotation.rotate()
    assert (result.previous, result.active, result.remaining, result.unreadable) == (old, new, 0, 0)
    assert result.reencrypted >= 3 and key_ids_in_use(a) == {new}
    # b meets the new key (as the active key, and in every ciphertext) and re-reads the keyfile:
    # it seals under the new key, verifies the re-encrypted secrets and TOTP codes.
    later = b.keys.create(user_id, step_up=StepUp.operator())
    assert token_key_id(_cipher(b, later.info.api_key)) == new
    record = b.keys.records.load(issued.info.api_key)
    assert record is not None and record.verifiers
    next_code_ok(b, user_id, secret, 1)
    enrolled(b)  # a TOTP enrolment on b seals under the new key too
    assert key_ids_in_use(b) == {new}

    with pytest.raises(MasterKeyInUse, match="active"):
        rotation.drop(new)
    rotation.drop(old)
    assert kr.parse_keyring(Path(a.master.keyfile or "").read_text()).ids == [new]
    assert rotation.status().keys == [new]
    with pytest.raises(MasterKeyError, match="not in the keyring"):
        rotation.drop(old)


def _cipher(svc: Services, public_id: str) -> str:
    with svc.db.read() as s:
        token = s.execute(select(ApiKey.secret_ciphertext).where(ApiKey.public_id == public_id)).scalar_one()
    assert token
    return token


def test_drop_refuses_while_any_ciphertext_names_the_key(fresh):
    a = fresh()
    rotation = MasterKeyRotation(a.db, a.master)
    old = rotation.status().active
    user_id, _ = enrolled(a)
    issued = a.keys.create(user_id, step_up=StepUp.operator())
    rotation.add_key()
    rotation.rotate()
    # A ciphertext under the old key (the in-grace secret of a key, say) keeps the key alive.
    with a.db.transaction() as s:
        row = s.execute(select(ApiKey).where(ApiKey.public_id == issued.info.api_key)).scalar_one()
        plain = a.master.decrypt(row.secret_ciphertext or "", api_secret_aad(row.public_id))
        row.previous_secret_ciphertext = a.master.ring.encrypt(plain, api_secret_aad(row.public_id), key_id=old)
    with pytest.raises(MasterKeyInUse, match="1 stored ciphertext"):
        rotation.drop(old)
    assert old in rotation.status().keys
    assert rotation.rotate().reencrypted == 1  # rotating again re-encrypts it; now the drop goes through
    rotation.drop(old)


def test_a_broken_ciphertext_is_counted_and_does_not_block_the_rotation(fresh):
    a = fresh()
    rotation = MasterKeyRotation(a.db, a.master)
    good_user, good_secret = enrolled(a)
    bad_user, _ = enrolled(a)
    with a.db.transaction() as s:
        good = s.get(TotpCredential, good_user)
        bad = s.get(TotpCredential, bad_user)
        assert good is not None and bad is not None
        bad.secret_ciphertext = good.secret_ciphertext  # moved to another account: it does not open there
    rotation.add_key()
    result = rotation.rotate()
    assert result.unreadable == 1 and result.remaining == 1 and result.reencrypted >= 1
    next_code_ok(a, good_user, good_secret, 1)
    with pytest.raises(MasterKeyInUse):
        rotation.drop(result.previous)


def test_with_keys_in_the_environment(fresh):
    first = kr.encode_master_key(kr.new_master_key())
    second = kr.encode_master_key(kr.new_master_key())
    a = fresh(master_keys=first)
    rotation = MasterKeyRotation(a.db, a.master)
    with pytest.raises(MasterKeyError, match="KEYPLANE_MASTER_KEYS"):
        rotation.add_key()
    user_id, secret = enrolled(a)
    # A node with the new key in its environment keeps sealing under the active (old) key...
    both = fresh(master_keys=f"{first},{second}")
    assert (
        token_key_id(_cipher(both, both.keys.create(user_id, step_up=StepUp.operator()).info.api_key))
        == rotation.status().active
    )
    result = MasterKeyRotation(both.db, both.master).rotate()
    assert result.active == kr.key_id(kr.decode_master_key(second)) and result.remaining == 0
    # ...and once the new key is active, a node without it refuses to start.
    with pytest.raises(MasterKeyError, match="not in KEYPLANE_MASTER_KEYS"):
        fresh(master_keys=first)
    MasterKeyRotation(both.db, both.master).drop(result.previous)
    only_new = fresh(master_keys=second)
    next_code_ok(only_new, user_id, secret, 1)
