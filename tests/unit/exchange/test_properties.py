"""Property tests: random sequences of orders, cancels, deposits and withdrawals across accounts
keep the ledger invariants (see kptest.exchange.check_invariants):

- per asset, the ledger sums to deposits minus withdrawals, and every reference balances;
- no balance goes negative, and each balance row equals its ledger entries;
- locked equals the sum of the open orders' reservations;
- the book is never crossed after matching.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from keyplane.exchange.errors import ExchangeError
from keyplane.exchange.params import parse_new_order
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
    st.sampled_from(["LIMIT/GTC", "LIMIT/IOC", "LIMIT/FOK", "LIMIT_MAKER", "MARKET", "MARKET/quote"]),
    st.integers(0, 8),  # price level
    st.integers(1, 40),  # quantity in steps of the lot
    st.sampled_from(["EXPIRE_TAKER", "NONE"]),
)
cancel_op = st.tuples(st.just("cancel"), st.integers(0, 2), st.integers(0, 10))
deposit_op = st.tuples(
    st.just("deposit"), st.integers(0, 2), st.sampled_from(["USDT", "BTC", "ETH"]), st.integers(1, 5000)
)
withdraw_op = st.tuples(
    st.just("withdraw"), st.integers(0, 2), st.sampled_from(["USDT", "BTC", "ETH"]), st.integers(1, 200)
)
ops = st.lists(st.one_of(order_op, order_op, order_op, cancel_op, deposit_op, withdraw_op), min_size=1, max_size=25)

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
    elif kind == "MARKET/quote" and side == "BUY":
        p.update(type="MARKET", quoteOrderQty=str(Decimal(_price(symbol, level)) * Decimal(qty)))
    else:
        p.update(type="MARKET", quantity=qty)
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
        assert trades.scalar_one() > 10
        assert withdrawals.scalar_one() > 0
