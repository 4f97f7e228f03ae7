"""Property tests: random sequences of orders, cancels, deposits and withdrawals across accounts
keep the ledger invariants (see kptest.exchange.check_invariants):

- per asset, the ledger sums to deposits minus withdrawals, and every reference balances;
- no balance goes negative, and each balance row equals its ledger entries;
- locked equals the sum of the open orders' reservations (conditional orders' too, armed or fired);
- the book is never crossed after matching.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from keyplane.exchange.errors import ExchangeError
from keyplane.exchange.orders import ListPlacement
from keyplane.exchange.params import parse_new_order, parse_oco
from keyplane.exchange.wallet import WithdrawRequest
from keyplane.services import Services, build_services
from kptest.exchange import check_invariants, clear_books

ADDR = {"USDT": "0x" + "11" * 20, "ETH": "0x" + "22" * 20, "BTC": "1BoatSLRHtKNngkdXEeobR76b53LETtpyT"}


@pytest.fixture
def svc(make_settings) -> Iterator[Services]:
    s = build_services(make_settings(withdraw_step_s=0))
    yield s
    clear_books(s)
    s.close()


@pytest.fixture
def users(svc) -> list[int]:
    return [
        svc.accounts.create_user(f"p{secrets.token_hex(6)}@example.com", "correct horse battery staple").id
        for _ in range(3)
    ]


order_op = st.tuples(
    st.just("order"),
    st.integers(0, 2),  # user
    st.sampled_from(["BTCUSDT", "ETHBTC"]),
    st.sampled_from(["BUY", "SELL"]),
    st.sampled_from(
        # plain orders twice as often as conditional ones, so that sequences still match plenty
        ["LIMIT/GTC", "LIMIT/IOC", "LIMIT/FOK", "LIMIT_MAKER", "MARKET", "MARKET/quote"] * 2
        + ["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "TRAILING", "TRAILING_LIMIT"]
    ),
    st.integers(0, 8),  # price level
    st.integers(1, 40),  # quantity in steps of the lot
    st.sampled_from(["EXPIRE_TAKER", "NONE"]),
)
oco_op = st.tuples(
    st.just("oco"),
    st.integers(0, 2),  # user
    st.sampled_from(["BTCUSDT", "ETHBTC"]),
    st.sampled_from(["BUY", "SELL"]),
    st.integers(0, 8),  # the price level of one leg
    st.integers(0, 8),  # and of the other (the higher one is the leg above)
    st.integers(1, 40),
    st.booleans(),  # the stop leg as a limit (STOP_LOSS_LIMIT) or a market (STOP_LOSS) order
)
cancel_op = st.tuples(st.just("cancel"), st.integers(0, 2), st.integers(0, 10))
deposit_op = st.tuples(
    st.just("deposit"), st.integers(0, 2), st.sampled_from(["USDT", "BTC", "ETH"]), st.integers(1, 5000)
)
withdraw_op = st.tuples(
    st.just("withdraw"), st.integers(0, 2), st.sampled_from(["USDT", "BTC", "ETH"]), st.integers(1, 200)
)
ops = st.lists(
    st.one_of(order_op, order_op, order_op, oco_op, cancel_op, deposit_op, withdraw_op), min_size=1, max_size=25
)

PRICES = {"BTCUSDT": ("100.00", "0.01"), "ETHBTC": ("0.05000", "0.00001")}
LOTS = {"BTCUSDT": "0.01", "ETHBTC": "0.01"}


def _price(symbol: str, level: int) -> str:
    from decimal import Decimal

    base, tick = PRICES[symbol]
    return str(Decimal(base) + Decimal(tick) * level * 5)


def _order_params(symbol, side, kind, level, lots, stp) -> dict[str, str]:
    from decimal import Decimal

    qty = str(Decimal(LOTS[symbol]) * lots)
    p = {"symbol": symbol, "side": side, "selfTradePreventionMode": stp}
    if kind.startswith("LIMIT/"):
        p.update(type="LIMIT", timeInForce=kind.split("/")[1], price=_price(symbol, level), quantity=qty)
    elif kind == "LIMIT_MAKER":
        p.update(type="LIMIT_MAKER", price=_price(symbol, level), quantity=qty)
    elif kind in ("STOP_LOSS", "TAKE_PROFIT"):
        p.update(type=kind, stopPrice=_price(symbol, level), quantity=qty)
    elif kind in ("STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
        # the limit a few ticks past the stop, on the side that lets the fired order trade
        limit = _price(symbol, min(8, level + 1) if side == "BUY" else max(0, level - 1))
        p.update(type=kind, timeInForce="GTC", price=limit, stopPrice=_price(symbol, level), quantity=qty)
    elif kind == "TRAILING":  # a trailing stop-loss, active at once
        p.update(type="STOP_LOSS", trailingDelta=str(10 + 40 * level), quantity=qty)
    elif kind == "TRAILING_LIMIT":  # a trailing take-profit with an activation price
        p.update(
            type="TAKE_PROFIT_LIMIT", timeInForce="GTC", price=_price(symbol, level), stopPrice=_price(symbol, level),
            trailingDelta=str(10 + 40 * level), quantity=qty,
        )  # fmt: skip
    elif kind == "MARKET/quote":  # a buy spends it, a sell sells what brings it in
        p.update(type="MARKET", quoteOrderQty=str(Decimal(_price(symbol, level)) * Decimal(qty)))
    else:
        p.update(type="MARKET", quantity=qty)
    return p


# A sequence that random ones may miss: trades, then stops that later trades fire (one of them by
# the trades of another that fired), and a trailing stop that follows the price.
_STOPS_FIRE = [
    ("order", 0, "BTCUSDT", "SELL", "LIMIT/GTC", 4, 10, "NONE"),
    ("order", 1, "BTCUSDT", "BUY", "LIMIT/GTC", 4, 10, "NONE"),  # a trade at level 4
    ("order", 2, "BTCUSDT", "SELL", "STOP_LOSS", 2, 6, "NONE"),
    ("order", 1, "BTCUSDT", "SELL", "STOP_LOSS_LIMIT", 1, 6, "NONE"),
    ("order", 2, "BTCUSDT", "SELL", "TRAILING", 1, 6, "NONE"),
    ("order", 0, "BTCUSDT", "BUY", "LIMIT/GTC", 2, 12, "NONE"),
    ("order", 0, "BTCUSDT", "BUY", "LIMIT/GTC", 0, 20, "NONE"),
    ("order", 1, "BTCUSDT", "SELL", "MARKET", 0, 6, "NONE"),  # a trade at level 2 fires the stops
    ("order", 0, "BTCUSDT", "SELL", "LIMIT/GTC", 6, 6, "NONE"),
    ("order", 1, "BTCUSDT", "BUY", "MARKET", 0, 6, "NONE"),
    ("oco", 2, "BTCUSDT", "SELL", 8, 3, 6, True),
    ("order", 0, "BTCUSDT", "BUY", "LIMIT/GTC", 8, 3, "NONE"),  # the OCO's take-profit trades in part
    ("cancel", 0, 3),
]


def _oco_params(symbol, side, a, b, lots, stop_limit) -> dict[str, str]:
    """A SELL takes profit above (LIMIT_MAKER) and stops below; a BUY stops above and takes profit below."""
    from decimal import Decimal

    lo, hi = sorted((a, b))
    stop_at, limit_at = ("below", "above") if side == "SELL" else ("above", "below")
    stop_level, limit_level = (lo, hi) if side == "SELL" else (hi, lo)
    p = {"symbol": symbol, "side": side, "quantity": str(Decimal(LOTS[symbol]) * lots)}
    p[f"{limit_at}Type"], p[f"{limit_at}Price"] = "LIMIT_MAKER", _price(symbol, limit_level)
    p[f"{stop_at}StopPrice"] = _price(symbol, stop_level)
    if stop_limit:
        p[f"{stop_at}Type"], p[f"{stop_at}TimeInForce"] = "STOP_LOSS_LIMIT", "GTC"
        p[f"{stop_at}Price"] = _price(symbol, max(0, stop_level - 1) if side == "SELL" else min(8, stop_level + 1))
    else:
        p[f"{stop_at}Type"] = "STOP_LOSS"
    return p


def _run(svc: Services, users: list[int], sequence: list[tuple]) -> None:
    ex = svc.exchange
    for uid in users:
        ex.wallet.credit(uid, "USDT", "2000")
        ex.wallet.credit(uid, "BTC", "5")
        ex.wallet.credit(uid, "ETH", "20")
    placed: list[tuple[int, str, int]] = []
    for op in sequence:
        try:
            if op[0] == "order":
                _, u, symbol, side, kind, level, lots, stp = op
                view = ex.orders.place(
                    users[u], parse_new_order(_order_params(symbol, side, kind, level, lots, stp), ex.markets)
                )
                placed.append((users[u], symbol, view.id))
            elif op[0] == "oco":
                _, u, symbol, side, a, b, lots, stop_limit = op
                order_list = parse_oco(_oco_params(symbol, side, a, b, lots, stop_limit), ex.markets)
                placed_list = ex.orders.place_list(ListPlacement(users[u], order_list))
                placed += [(users[u], symbol, v.id) for v in placed_list.orders]
            elif op[0] == "cancel":
                _, u, idx = op
                if placed:
                    uid, symbol, oid = placed[idx % len(placed)]
                    ex.orders.cancel(uid, ex.markets[symbol], oid, None)
            elif op[0] == "deposit":
                _, u, asset, amount = op
                ex.wallet.credit(users[u], asset, str(amount))
            else:
                _, u, asset, amount = op
                ex.wallet.withdraw(users[u], WithdrawRequest(asset, ADDR[asset], str(amount)))
                ex.wallet.advance()
                ex.wallet.advance()
        except ExchangeError:
            pass  # refusals (funds, filters, final orders) are part of the sequence
    check_invariants(svc)


def test_random_sequences_keep_the_ledger_invariants(svc, users):
    """Every random sequence keeps the invariants; then, against vacuous passes, the sequences
    really matched orders, rested orders and moved funds out. (One test: on PostgreSQL each test
    has a database of its own, so a later test could not see these sequences' trades.)"""

    @settings(max_examples=120, deadline=None)
    @given(sequence=ops)
    @example(sequence=_STOPS_FIRE)
    def every_sequence(sequence):
        _run(svc, users, sequence)

    every_sequence()
    with svc.db.read() as s:
        c = s.connection()
        trades = c.execute(
            text("SELECT COUNT(*) FROM ex_fills WHERE user_id IN (:a, :b, :c)"), dict(zip("abc", users, strict=True))
        )
        withdrawals = c.execute(text("SELECT COUNT(*) FROM ex_withdrawals WHERE status = 6 AND user_id IN (:a, :b, :c)"),
                                dict(zip("abc", users, strict=True)))  # fmt: skip
        fired = c.execute(
            text(
                "SELECT COUNT(*) FROM ex_orders WHERE type IN ('STOP_LOSS', 'STOP_LOSS_LIMIT', 'TAKE_PROFIT', "
                "'TAKE_PROFIT_LIMIT') AND working_ms IS NOT NULL AND user_id IN (:a, :b, :c)"
            ),
            dict(zip("abc", users, strict=True)),
        )
        assert trades.scalar_one() > 10
        assert withdrawals.scalar_one() > 0
        assert fired.scalar_one() > 0  # conditional orders were armed, and trades fired some
        lists = c.execute(
            text("SELECT COUNT(*) FROM ex_order_lists WHERE status = 'ALL_DONE' AND user_id IN (:a, :b, :c)"),
            dict(zip("abc", users, strict=True)),
        )
        assert lists.scalar_one() > 0  # OCO lists were placed, and ended
