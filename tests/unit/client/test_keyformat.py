"""The client's own check of keyplane's credential format agrees with the server's (which it may
not import), and says what is wrong without showing the value."""

from __future__ import annotations

import pytest

from keyplane.client import keyformat
from keyplane.keys import format as server_format


def _flip(value: str, at: int) -> str:
    c = value[at]
    return value[:at] + ("A" if c != "A" else "B") + value[at + 1 :]


def test_agrees_with_the_server_on_fresh_credentials() -> None:
    for _ in range(50):
        key, secret = server_format.new_api_key(), server_format.new_secret()
        assert keyformat.is_api_key(key) and keyformat.check_api_key(key) == key
        assert keyformat.is_secret(secret) and keyformat.check_secret(secret) == secret
        assert keyformat.is_api_key(server_format.new_api_key("test"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_flip(server_format.new_api_key(), 10), "checksum does not match"),
        (server_format.new_api_key()[:-1], "was it cut short"),
        (server_format.new_secret(), "is a keyplane secret"),
        ("AKIAIOSFODNN7EXAMPLE", "must start with kp_live_ or kp_test_"),
    ],
)
def test_a_bad_api_key_is_named(value: str, message: str) -> None:
    assert not server_format.is_valid_api_key(value)
    with pytest.raises(keyformat.BadCredential, match=message) as caught:
        keyformat.check_api_key(value)
    assert value[8:] not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_flip(server_format.new_secret(), 20), "checksum does not match"),
        (server_format.new_secret()[:30], "was it cut short"),
        (server_format.new_api_key(), "is an API key"),
        ("hunter2hunter2", "must start with kps_"),
    ],
)
def test_a_bad_secret_is_named_and_never_shown(value: str, message: str) -> None:
    with pytest.raises(keyformat.BadCredential, match=message) as caught:
        keyformat.check_secret(value)
    assert value[4:] not in str(caught.value)
