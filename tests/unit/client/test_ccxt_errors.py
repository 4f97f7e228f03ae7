"""ccxt's exceptions carry the exchange id and the raw response body; the holder tools show what
the server said instead, in one form, through ``translate``."""

from __future__ import annotations

import ccxt
import pytest

from keyplane.client.ccxt_errors import server_message, translate
from keyplane.client.errors import BadRequest, ExchangeUnreachable, InvalidKey, KeyRevoked


@pytest.mark.parametrize(
    ("exc", "cls", "text"),
    [
        (
            ccxt.AuthenticationError(
                'binance {"code":-2015,"msg":"This API key has been revoked.","reason":"key_revoked"}'
            ),
            KeyRevoked,
            "key_revoked: This API key has been revoked.",
        ),
        (
            ccxt.BadRequest('binance {"code": -1002, "msg": "You are not authorized to execute this request."}'),
            BadRequest,
            "-1002: You are not authorized to execute this request.",
        ),
        (
            ccxt.DDoSProtection('binance {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'),
            InvalidKey,
            "-2015: Invalid API-key, IP, or permissions for action.",
        ),
        (ccxt.ExchangeError("binance something odd"), BadRequest, "binance something odd"),
    ],
)
def test_the_servers_message_not_the_envelope(exc: Exception, cls: type, text: str) -> None:
    err = translate(exc)
    assert isinstance(err, cls)
    assert str(err) == text
    assert "{" not in str(err)


def test_network_errors_and_secrets() -> None:
    err = translate(ccxt.NetworkError("binance GET http://127.0.0.1:9/api/v3/account?signature=abcdef"))
    assert isinstance(err, ExchangeUnreachable) and "abcdef" not in str(err)
    leaked = ccxt.BadRequest('binance {"code": -1100, "msg": "bad kps_' + "A" * 46 + '"}')
    assert "kps_A" not in server_message(leaked)
