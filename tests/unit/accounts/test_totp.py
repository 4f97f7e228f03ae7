from __future__ import annotations

import pyotp
import pytest

from keyplane.accounts import totp

NOW = 1_800_000_000.0  # a fixed instant; TOTP time is passed in, never read from the clock


@pytest.fixture
def secret() -> str:
    return totp.new_totp_secret()


def test_secret_is_160_bits_of_base32(secret):
    assert len(secret) == 32 and pyotp.TOTP(secret).now().isdigit()


def test_accepts_current_and_adjacent_steps_and_returns_the_counter(secret):
    step = totp.counter_at(NOW)
    for delta in (-1, 0, 1):
        code = totp.totp_at(secret, step + delta)
        assert totp.verify_totp(secret, code, last_counter=None, now=NOW) == step + delta


def test_refuses_codes_outside_the_window(secret):
    step = totp.counter_at(NOW)
    for delta in (-3, -2, 2, 5):
        with pytest.raises(totp.TotpRejected, match="wrong"):
            totp.verify_totp(secret, totp.totp_at(secret, step + delta), last_counter=None, now=NOW)


def test_wider_drift_is_a_setting(secret):
    step = totp.counter_at(NOW)
    assert totp.verify_totp(secret, totp.totp_at(secret, step + 5), last_counter=None, now=NOW, drift=5) == step + 5


def test_replay_of_the_same_or_an_older_step_is_refused(secret):
    step = totp.counter_at(NOW)
    code = totp.totp_at(secret, step)
    used = totp.verify_totp(secret, code, last_counter=None, now=NOW)
    with pytest.raises(totp.TotpRejected, match="already used"):
        totp.verify_totp(secret, code, last_counter=used, now=NOW)
    with pytest.raises(totp.TotpRejected, match="already used"):
        totp.verify_totp(secret, totp.totp_at(secret, step - 1), last_counter=used, now=NOW)
    assert totp.verify_totp(secret, totp.totp_at(secret, step + 1), last_counter=used, now=NOW) == step + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", "12 34 5x", None])
def test_malformed_codes(secret, code):
    with pytest.raises(totp.TotpRejected):
        totp.verify_totp(secret, code, last_counter=None, now=NOW)  # type: ignore[arg-type]


def test_spaces_and_dashes_are_ignored(secret):
    code = totp.totp_at(secret, totp.counter_at(NOW))
    assert totp.verify_totp(secret, f"{code[:3]} {code[3:]}", last_counter=None, now=NOW)


def test_provisioning_uri_and_qr_svg(secret):
    uri = totp.provisioning_uri(secret, "a@example.com", "keyplane")
    assert uri.startswith("otpauth://totp/keyplane:a%40example.com?") and f"secret={secret}" in uri
    svg = totp.qr_svg(uri)
    assert svg.startswith("<svg") and "<path" in svg and svg.rstrip().endswith("</svg>")
    assert totp.grouped("ABCDEFGH") == "ABCD EFGH"


def test_recovery_codes_are_unique_hashed_and_bound_to_user(secret):
    codes = totp.new_recovery_codes()
    assert len(codes) == 10 == len(set(codes))
    assert all(totp.looks_like_recovery_code(c) for c in codes)
    key = totp.recovery_key(secret)
    h = totp.recovery_code_hash(key, 1, codes[0])
    assert codes[0] not in h
    assert h == totp.recovery_code_hash(key, 1, codes[0].upper().replace("-", " "))
    assert h != totp.recovery_code_hash(key, 2, codes[0])
    assert h != totp.recovery_code_hash(totp.recovery_key(totp.new_totp_secret()), 1, codes[0])
    assert not totp.looks_like_recovery_code("123456")
