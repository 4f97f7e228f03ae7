from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.keys import secretbox as sb


@given(st.binary(max_size=200), st.binary(max_size=64))
def test_round_trip(plaintext, aad):
    ring = sb.Keyring([sb.new_master_key()])
    assert ring.decrypt(ring.encrypt(plaintext, aad), aad) == plaintext


def test_ciphertext_is_bound_to_its_associated_data():
    ring = sb.Keyring([sb.new_master_key()])
    token = ring.encrypt(b"kps_secret", b"kp_live_A")
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt(token, b"kp_live_B")


def test_tampering_is_detected():
    ring = sb.Keyring([sb.new_master_key()])
    token = ring.encrypt(b"kps_secret", b"aad")
    v, kid, nonce, ct = token.split(".")
    flipped = ct[:-2] + ("A" if ct[-2] != "A" else "B") + ct[-1]
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt(".".join((v, kid, nonce, flipped)), b"aad")
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt("v2." + token[3:], b"aad")


def test_rotation_keeps_old_ciphertexts_readable():
    old = sb.Keyring([sb.new_master_key()])
    token = old.encrypt(b"s", b"a")
    new = old.with_new_key(sb.new_master_key())
    assert new.decrypt(token, b"a") == b"s"
    assert new.needs_reencrypt(token)
    fresh = new.encrypt(b"s", b"a")
    assert not new.needs_reencrypt(fresh)
    with pytest.raises(sb.UnknownMasterKey):
        new.only_newest().decrypt(token, b"a")


def test_keyring_never_prints_keys():
    key = sb.new_master_key()
    ring = sb.Keyring([key])
    assert sb.encode_master_key(key) not in repr(ring)


def test_parse_keyring_and_bad_keys():
    a, b = sb.new_master_key(), sb.new_master_key()
    ring = sb.parse_keyring(f"{sb.encode_master_key(a)}, {sb.encode_master_key(b)}\n")
    assert ring.ids == [sb.key_id(a), sb.key_id(b)]
    with pytest.raises(sb.SecretBoxError, match="32 bytes"):
        sb.parse_keyring("c2hvcnQ")
    with pytest.raises(sb.SecretBoxError):
        sb.parse_keyring("")


def test_keyfile_is_created_owner_only(tmp_path):
    path = tmp_path / "master.keys"
    ring = sb.load_or_create_keyfile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sb.load_or_create_keyfile(path).ids == ring.ids
    os.chmod(path, 0o644)
    with pytest.raises(sb.SecretBoxError, match="readable by others"):
        sb.load_or_create_keyfile(path)
