from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.crypto import keyring as kr
from keyplane.crypto import secretbox as sb


def ring_of(*keys: bytes) -> kr.Keyring:
    return kr.Keyring(list(keys) or [kr.new_master_key()])


@given(st.binary(max_size=200), st.binary(max_size=64))
def test_round_trip(plaintext, aad):
    ring = ring_of()
    assert ring.decrypt(ring.encrypt(plaintext, aad, key_id=ring.newest_id), aad) == plaintext


def test_ciphertext_is_bound_to_its_associated_data():
    ring = ring_of()
    token = ring.encrypt(b"kps_secret", sb.api_secret_aad("kp_live_A"), key_id=ring.newest_id)
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt(token, sb.api_secret_aad("kp_live_B"))
    totp = ring.encrypt(b"JBSWY3DP", sb.totp_secret_aad(1), key_id=ring.newest_id)
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt(totp, sb.totp_secret_aad(2))


def test_tampering_is_detected():
    ring = ring_of()
    token = ring.encrypt(b"kps_secret", b"aad", key_id=ring.newest_id)
    v, kid, nonce, ct = token.split(".")
    flipped = ct[:-2] + ("A" if ct[-2] != "A" else "B") + ct[-1]
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt(".".join((v, kid, nonce, flipped)), b"aad")
    with pytest.raises(sb.SecretBoxError):
        ring.decrypt("v2." + token[3:], b"aad")


def test_a_ciphertext_names_its_key_and_any_held_key_seals():
    old_key, new_key = kr.new_master_key(), kr.new_master_key()
    ring = ring_of(old_key, new_key)
    old_id, new_id = kr.key_id(old_key), kr.key_id(new_key)
    under_old = ring.encrypt(b"s", b"a", key_id=old_id)  # the active key, not the newest, seals
    assert sb.token_key_id(under_old) == old_id and under_old.startswith(sb.key_id_prefix(old_id))
    assert ring.decrypt(ring.encrypt(b"s", b"a", key_id=new_id), b"a") == b"s"
    with pytest.raises(sb.UnknownMasterKey):
        ring.without(old_id).decrypt(under_old, b"a")
    with pytest.raises(sb.UnknownMasterKey):
        ring.without(new_id).encrypt(b"s", b"a", key_id=new_id)


def test_keyring_never_prints_keys():
    key = kr.new_master_key()
    ring = ring_of(key)
    assert kr.encode_master_key(key) not in repr(ring)
    assert kr.encode_master_key(key) not in repr(kr.MasterKeyring(lambda: ring, reloadable=False))


def test_parse_keyring_and_bad_keys():
    a, b = kr.new_master_key(), kr.new_master_key()
    ring = kr.parse_keyring(f"{kr.encode_master_key(a)}, {kr.encode_master_key(b)}\n")
    assert ring.ids == [kr.key_id(a), kr.key_id(b)]
    with pytest.raises(kr.KeyringError, match="32 bytes"):
        kr.parse_keyring("c2hvcnQ")
    with pytest.raises(kr.KeyringError):
        kr.parse_keyring("")


def test_keyfile_is_created_owner_only(tmp_path):
    path = tmp_path / "master.keys"
    ring = kr.load_or_create_keyfile(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kr.load_or_create_keyfile(path).ids == ring.ids
    os.chmod(path, 0o644)
    with pytest.raises(kr.KeyringError, match="readable by others"):
        kr.load_or_create_keyfile(path)


def test_a_running_keyring_picks_up_a_key_added_to_its_file(tmp_path):
    path = tmp_path / "master.keys"
    kr.load_or_create_keyfile(path)
    running = kr.MasterKeyring(lambda: kr.read_keyfile(path), reloadable=True)
    other = kr.MasterKeyring(lambda: kr.read_keyfile(path), reloadable=True)
    grown = running.keyring.with_new_key(kr.new_master_key())
    kr.write_keyfile(path, grown)  # another process adds a key
    token = grown.encrypt(b"s", b"a", key_id=grown.newest_id)
    assert other.decrypt(token, b"a") == b"s"  # the unknown id makes it re-read the file
    assert running.encrypt(b"t", b"a", key_id=grown.newest_id)
    fixed = kr.MasterKeyring(ring_of, reloadable=False)
    with pytest.raises(sb.UnknownMasterKey):
        fixed.decrypt(token, b"a")
