"""A StepUp is a proof, not a flag: no caller can make one but the 2FA verifier and the operator's
named constructor; it is good for its own user only, and only for a few minutes."""

from __future__ import annotations

import datetime as dt

import pytest

from keyplane.accounts.errors import StepUpRequired
from keyplane.accounts.stepup import STEP_UP_MAX_AGE, StepUp, is_fresh, require_step_up

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


def _proof(user_id: int, at: dt.datetime = NOW) -> StepUp:
    return StepUp._from_verified_code(user_id, "totp", at)


@pytest.mark.parametrize("mint", [None, object(), True, "totp"])
def test_a_step_up_cannot_be_made_by_hand(mint):
    with pytest.raises(TypeError, match="only by the 2FA verifier"):
        StepUp(7, NOW, "totp", mint)


@pytest.mark.parametrize(
    ("proof", "user_id", "fresh"),
    [
        (None, 7, False),
        (True, 7, False),  # a boolean is not a proof
        ("totp", 7, False),
        (_proof(7), 7, True),
        (_proof(7), 8, False),  # another user's proof
        (_proof(7, NOW - STEP_UP_MAX_AGE), 7, True),
        (_proof(7, NOW - STEP_UP_MAX_AGE - dt.timedelta(seconds=1)), 7, False),  # stale
        (_proof(7, NOW + dt.timedelta(seconds=30)), 7, True),  # another node's clock, a little ahead
        (_proof(7, NOW + dt.timedelta(minutes=2)), 7, False),  # from the future
        (StepUp.operator(now=NOW), 7, True),  # the operator acts for every account
        (StepUp.operator(now=NOW - dt.timedelta(hours=1)), 7, False),
    ],
)
def test_freshness_and_owner(proof, user_id, fresh):
    assert is_fresh(proof, user_id, now=NOW) is fresh
    if fresh:
        assert require_step_up(proof, user_id, now=NOW) is proof
    else:
        with pytest.raises(StepUpRequired) as refused:
            require_step_up(proof, user_id, reasons=["adds the trade scope"], now=NOW)
        assert refused.value.code == "step_up_required" and refused.value.status == 403
        assert "adds the trade scope" in refused.value.message


def test_a_step_up_shows_no_secret_and_says_how_it_was_made():
    assert repr(_proof(7)) == "StepUp(user_id=7, how='totp', verified_at=2026-12-02T12:00:00+00:00)"
    assert StepUp.operator().how == "operator" and StepUp.operator().user_id is None
