"""``keyplane simulate`` rides out a transient 503 (retry with back-off) instead of exiting."""

from __future__ import annotations

import random

import ccxt
import pytest

from keyplane.commands import exchange as cmd


def test_a_transient_failure_is_retried_with_growing_waits():
    calls, waits = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ccxt.OperationFailed('binance {"code":-1001,"msg":"the database is unavailable"}')
        return "ok"

    assert cmd._retrying(flaky, sleep=waits.append, rng=random.Random(1)) == "ok"
    assert len(calls) == 3 and len(waits) == 2 and waits[1] > waits[0] * 0.6


def test_a_refused_order_is_not_retried_and_a_lasting_outage_is_skipped():
    calls = []

    def refused() -> None:
        calls.append(1)
        raise ccxt.InsufficientFunds("no")

    with pytest.raises(ccxt.InsufficientFunds):
        cmd._retrying(refused, sleep=lambda s: None)
    assert calls == [1]

    def down() -> None:
        raise ccxt.ExchangeNotAvailable("503")

    original = cmd._retrying
    cmd_retry = lambda fn, *a: original(fn, *a, sleep=lambda s: None)  # noqa: E731
    try:
        cmd._retrying = cmd_retry  # type: ignore[assignment]
        assert cmd._try(down) is False  # skipped, not raised: the simulator keeps going
    finally:
        cmd._retrying = original  # type: ignore[assignment]
