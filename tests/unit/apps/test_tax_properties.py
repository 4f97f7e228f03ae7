"""Properties that hold for every method: proceeds - cost = gain (per row and in total), no lot is
used for more than it holds, and the units disposed of match the units the rows name."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.apps.tax.model import Trade
from keyplane.apps.tax.pools import METHODS
from kptest.taxkit import compute

amounts = st.decimals(min_value=D("0.001"), max_value=D("50"), places=3)
prices = st.decimals(min_value=D("0.5"), max_value=D("1000"), places=2)
fee_assets = st.sampled_from([None, "base", "quote", "BNB"])


@st.composite
def ledgers(draw: st.DrawFn) -> list[Trade]:
    n = draw(st.integers(min_value=1, max_value=40))
    trades = []
    ts = 1_700_000_000_000
    for i in range(n):
        ts += draw(st.integers(min_value=0, max_value=90 * 86_400_000))
        base = draw(st.sampled_from(["BTC", "ETH", "BNB"]))
        side = draw(st.sampled_from(["buy", "sell"]))
        amount = draw(amounts)
        cost = (amount * draw(prices)).quantize(D("0.01"))
        which = draw(fee_assets)
        fee_asset = {None: None, "base": base, "quote": "USDT", "BNB": "BNB"}[which]
        fee = D(0) if fee_asset is None else (amount / 1000 if fee_asset == base else D("0.01"))
        trades.append(Trade("acct", str(i), ts, base, "USDT", side, amount, cost, fee, fee_asset))
    return trades


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=60, deadline=None)
@given(trades=ledgers())
def test_gains_add_up_and_no_lot_is_used_twice(method: str, trades: list[Trade]) -> None:
    result = compute(trades, method=method)
    for d in result.disposals:
        assert d.gain == d.proceeds - d.cost
        assert d.amount == sum(p.amount for p in d.lots)
        assert d.cost == sum(p.cost for p in d.lots)
        assert d.amount > 0
    total_p = sum((d.proceeds for d in result.disposals), D(0))
    total_c = sum((d.cost for d in result.disposals), D(0))
    assert total_p - total_c == sum((d.gain for d in result.disposals), D(0))

    # What each lot held when it was acquired: the units received by its trade.
    acquired: dict[str, D] = {}
    for t in trades:
        received = t.amount if t.side == "buy" else D(0)
        if t.side == "buy" and t.fee_asset == t.base:
            received -= t.fee
        acquired[f"acct:trade:{t.id}"] = received
    used: dict[str, D] = defaultdict(D)
    for d in result.disposals:
        for p in d.lots:
            if p.lot_id != "unknown":
                used[p.lot_id] += p.amount
    for lot_id, amount in used.items():
        assert amount <= acquired[lot_id], lot_id
    # Units left in the pools plus units used equal units acquired, per asset.
    by_asset: dict[str, D] = defaultdict(D)
    for t in trades:
        if t.side == "buy":
            by_asset[t.base] += acquired[f"acct:trade:{t.id}"]
    for d in result.disposals:
        by_asset[d.asset] -= sum((p.amount for p in d.lots if p.lot_id != "unknown"), D(0))
    for asset, left in by_asset.items():
        assert result.holdings.get(asset, D(0)) == left
