from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.keys import format as kf


def test_new_credentials_are_well_formed():
    key, secret = kf.new_api_key(), kf.new_secret()
    assert key.startswith("kp_live_") and len(key) == 8 + 28
    assert secret.startswith("kps_") and len(secret) == 4 + 46
    assert kf.is_valid_api_key(key) and kf.is_valid_secret(secret)
    assert kf.parse_credential(key) is not None and kf.parse_credential(secret) is not None
    assert kf.new_api_key("test").startswith("kp_test_")


def test_keys_are_unique_and_random():
    assert len({kf.new_api_key() for _ in range(2000)}) == 2000


@pytest.mark.parametrize(
    "value",
    ["", "kp_live_", "kp_live_abc", "kps_abc", "KP_LIVE_" + "a" * 28, "kp_live_" + "a" * 27 + "-", "ghp_" + "a" * 36],
)
def test_malformed_values_are_not_credentials(value):
    assert kf.parse_credential(value) is None


@given(st.integers(min_value=8, max_value=35), st.sampled_from(kf.ALPHABET))
def test_any_single_character_change_breaks_the_checksum(pos, char):
    key = kf.new_api_key()
    if key[pos] == char:
        return
    changed = key[:pos] + char + key[pos + 1 :]
    assert kf.has_api_key_shape(changed)
    assert not kf.is_valid_api_key(changed)


def test_find_credentials_in_text_skips_look_alikes():
    key, secret = kf.new_api_key(), kf.new_secret()
    fake = key[:-1] + ("0" if key[-1] != "0" else "1")
    text = f"config = {{'apiKey': '{key}', 'secret': \"{secret}\"}} # old: {fake} x{key}y"
    found = kf.find_credentials(text)
    assert [c.value for c in found] == [key, secret]
    assert [c.kind for c in found] == ["api_key", "secret"]


def test_masking_never_shows_a_secret():
    secret = kf.new_secret()
    assert kf.mask(secret) == "kps_…"
    assert secret not in repr(kf.Credential("secret", secret))
    assert kf.mask(kf.new_api_key()).startswith("kp_live_")
