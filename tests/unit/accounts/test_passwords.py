from __future__ import annotations

import pytest

from keyplane.accounts.errors import WeakPassword
from keyplane.accounts.passwords import (
    common_passwords,
    hash_password,
    needs_rehash,
    password_problem,
    verify_password,
)
from keyplane.accounts.service import check_password


def test_argon2_round_trip():
    h = hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "correct horse battery staple")
    assert not verify_password(h, "wrong")
    assert not verify_password("not a hash", "x")
    assert not needs_rehash(h)


def test_hash_and_verify():
    h = hash_password("orbit-lantern-meadow-42")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "orbit-lantern-meadow-42")
    assert not verify_password(h, "orbit-lantern-meadow-43")
    assert not verify_password("not a hash", "x")


def test_common_password_list_ships_with_the_package():
    words = common_passwords()
    assert len(words) > 1000
    assert {"password123", "qwertyuiop", "1234567890"} <= words


@pytest.mark.parametrize(
    ("password", "email", "why"),
    [
        ("short", "", "at least 10"),
        ("Password123", "", "common"),
        ("  QWERTYUIOP ", "", "common"),
        ("aaaaaaaaaaaaa", "", "too few"),
        ("alice.smith-2031", "alice.smith@example.com", "email"),
        ("x" * 2000, "", "at most"),
    ],
)
def test_weak_passwords(password, email, why):
    problem = password_problem(password, email)
    assert problem is not None and why in problem
    with pytest.raises(WeakPassword) as e:
        check_password(password, email)
    assert e.value.field == "password"


def test_good_password():
    assert password_problem("orbit-lantern-meadow-42", "bob@example.com") is None
