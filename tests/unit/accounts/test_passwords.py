from __future__ import annotations

from keyplane.accounts.passwords import hash_password, needs_rehash, verify_password


def test_argon2_round_trip():
    h = hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse battery staple")
    assert not verify_password(h, "wrong")
    assert not verify_password("not a hash", "x")
    assert not needs_rehash(h)
