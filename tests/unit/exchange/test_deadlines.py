"""A write checks its request's recvWindow again inside its transaction, right before it applies."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from keyplane.exchange.orders import Placement, RecvWindowPassed
from keyplane.exchange.params import parse_new_order
from keyplane.services import Services, build_services
from kptest.backends import db_scope
from kptest.exchange import check_invariants, clear_books


@pytest.fixture(scope=db_scope("module"))
def svc(make_settings) -> Iterator[Services]:
    s = build_services(make_settings())
    yield s
    clear_books(s)
    s.close()


def _buyer(svc: Services) -> int:
    uid = svc.accounts.create_user(f"d{secrets.token_hex(6)}@example.com", "correct horse battery staple").id
    assert svc.exchange is not None
    svc.exchange.wallet.credit(uid, "USDT", "1000")
    return uid


def _order(svc: Services, price: str = "10"):  # type: ignore[no-untyped-def]
    assert svc.exchange is not None
    p = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "price": price, "quantity": "1"}
    return parse_new_order(p, svc.exchange.markets)


def test_a_passed_deadline_places_nothing(svc):
    ex = svc.exchange
    uid = _buyer(svc)
    with pytest.raises(RecvWindowPassed) as info:
        ex.orders.place(uid, _order(svc), not_after_s=time.time() - 0.5)
    assert info.value.binance_code == -1021 and info.value.late_ms >= 500
    assert ex.orders.recent_orders(uid) == []
    assert ex.balances(uid)["USDT"] == (1000 * 10**8, 0)
    view = ex.orders.place(uid, _order(svc), not_after_s=time.time() + 30)
    assert view.status == "NEW"
    check_invariants(svc)


def test_in_a_batch_only_the_late_order_is_refused(svc):
    ex = svc.exchange
    uid = _buyer(svc)
    now = time.time()
    out = ex.orders.place_batch([
        Placement(uid, _order(svc, "10"), not_after_s=now + 30),
        Placement(uid, _order(svc, "11"), not_after_s=now - 1),
        Placement(uid, _order(svc, "12")),
    ])  # fmt: skip
    assert [type(r).__name__ for r in out] == ["OrderView", "RecvWindowPassed", "OrderView"]
    assert len(ex.orders.recent_orders(uid)) == 2
    check_invariants(svc)


def test_a_late_cancel_changes_nothing(svc):
    ex = svc.exchange
    uid = _buyer(svc)
    view = ex.orders.place(uid, _order(svc))
    market = ex.markets["BTCUSDT"]
    with pytest.raises(RecvWindowPassed):
        ex.orders.cancel(uid, market, view.id, None, not_after_s=time.time() - 0.1)
    assert ex.orders.get(uid, market, view.id, None).status == "NEW"
    assert ex.orders.cancel(uid, market, view.id, None, not_after_s=time.time() + 30).status == "CANCELED"
    check_invariants(svc)


def test_a_withdrawal_past_its_deadline_moves_nothing(svc):
    from decimal import Decimal

    from keyplane.exchange.wallet import WithdrawRequest

    ex = svc.exchange
    uid = _buyer(svc)
    address = "0x" + "ab" * 20
    req = WithdrawRequest(coin="USDT", address=address, amount="10")
    if not ex.wallet.asset("USDT").valid_address(address):
        pytest.skip("the default USDT network takes another address form")
    with pytest.raises(RecvWindowPassed) as info:
        ex.wallet.withdraw(uid, req, key_id=None, not_after_s=time.time() - 0.5)
    assert "withdrawal" in info.value.message
    assert ex.balances(uid)["USDT"] == (1000 * 10**8, 0)
    assert ex.wallet.withdrawals(uid) == []
    # A cap stored by an older version, past any amount, caps nothing and returns at once.
    wid = ex.wallet.withdraw(
        uid, req, key_id="kp_live_x", daily_cap=Decimal("1E+999999999"), not_after_s=time.time() + 30
    )
    assert wid
    check_invariants(svc)
