"""The runner's failure handling, against an in-memory venue that implements the ``Venue``
protocol: backoff on rate limits (honouring Retry-After), reconnection after network errors, a
crash between saving an order id and sending it, and a clean stop when the key is revoked."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from keyplane.apps.bot.grid import GridConfig
from keyplane.apps.bot.runner import EXIT_KEY_LOST, EXIT_NOT_CANCELED, EXIT_OK, Refused, Runner, cancel_orders
from keyplane.apps.bot.venues import OrderGone
from keyplane.client.errors import ExchangeUnreachable, KeyRevoked, RateLimited

CONFIG = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50))


class MemoryVenue:
    """Orders kept in a dict; ``failures`` is a queue of exceptions raised by the next calls."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, str]] = {}
        self.failures: list[Exception] = []
        self.placed: list[str] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            raise self.failures.pop(0)

    def market_price(self) -> D:
        self._maybe_fail()
        return D(60000)

    def round_price(self, price: D) -> D:
        return price.quantize(D("0.01"))

    def round_amount(self, amount: D) -> D:
        return amount.quantize(D("0.00001"))

    def place(self, side: str, price: D, amount: D, cid: str) -> str:
        self._maybe_fail()
        assert cid not in self.orders, f"duplicate client order id {cid}"
        self.orders[cid] = {"side": side, "price": str(price), "status": "open"}
        self.placed.append(cid)
        return str(len(self.placed))

    def open_cids(self) -> set[str]:
        self._maybe_fail()
        return {c for c, o in self.orders.items() if o["status"] == "open"}

    def status(self, cid: str) -> str:
        self._maybe_fail()
        if cid not in self.orders:
            raise OrderGone("order not found")
        return self.orders[cid]["status"]

    def cancel(self, cid: str) -> None:
        self._maybe_fail()
        if self.orders.get(cid, {}).get("status") != "open":
            raise OrderGone("order not found")
        self.orders[cid]["status"] = "canceled"


def runner(venue: MemoryVenue, path: Path, sleeps: list[float], on_stop: str = "leave") -> Runner:
    return Runner(CONFIG, venue, path, interval_s=0.0, sleep=sleeps.append, on_stop=on_stop)


def test_backs_off_on_rate_limits_and_reconnects(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    venue.failures = [
        RateLimited("slow down", retry_after_s=7),
        ExchangeUnreachable("connection refused"),
        ExchangeUnreachable("connection refused"),
    ]
    r = runner(venue, tmp_path / "s.json", sleeps)
    assert r.run(max_ticks=3) == EXIT_OK
    assert [s for s in sleeps if s] == [7, 2.0, 4.0]  # Retry-After, then exponential reconnects
    assert len(venue.placed) == 4


def test_a_fill_is_replaced_and_state_survives_a_restart(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    path = tmp_path / "s.json"
    assert runner(venue, path, sleeps).run(max_ticks=1) == EXIT_OK
    buy = next(c for c, o in venue.orders.items() if o["price"] == "59750.00")
    venue.orders[buy]["status"] = "closed"
    assert runner(venue, path, sleeps).run(max_ticks=2) == EXIT_OK
    sells = sorted(o["price"] for o in venue.orders.values() if o["side"] == "sell" and o["status"] == "open")
    assert sells == ["60000.00", "60250.00", "60500.00"]
    assert json.loads(path.read_text())["state"]["fills"] == 1


def test_an_id_saved_but_never_sent_is_sent_once_after_a_crash(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    path = tmp_path / "s.json"
    # The process dies while sending the second order, with every id already saved as pending.
    original_place = venue.place
    calls = {"n": 0}

    def place_then_crash(side: str, price: D, amount: D, cid: str) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise SystemExit("crash")
        return original_place(side, price, amount, cid)

    venue.place = place_then_crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        runner(venue, path, sleeps).run(max_ticks=1)
    saved = json.loads(path.read_text())["state"]["levels"]
    assert sum(1 for lv in saved if lv["status"] == "pending") == 3
    venue.place = original_place  # type: ignore[method-assign]
    assert runner(venue, path, sleeps).run(max_ticks=1) == EXIT_OK
    assert len(venue.placed) == len(set(venue.placed)) == 4  # each id placed exactly once


def test_stops_with_exit_3_when_the_key_is_revoked(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    path = tmp_path / "s.json"
    r = runner(venue, path, sleeps)
    assert r.run(max_ticks=1) == EXIT_OK
    venue.failures = [KeyRevoked("revoked", reason="key_revoked")]
    r2 = runner(venue, path, sleeps)
    assert r2.run(max_ticks=5) == EXIT_KEY_LOST
    assert len(venue.open_cids()) == 4  # orders left as they are
    assert sum(1 for lv in json.loads(path.read_text())["state"]["levels"] if lv["status"] == "open") == 4


def test_a_clean_stop_cancels_the_grid_by_default_and_a_restart_places_it_anew(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    path = tmp_path / "s.json"
    r = Runner(CONFIG, venue, path, interval_s=0.0, sleep=sleeps.append)  # the default: cancel
    assert r.run(max_ticks=2) == EXIT_OK
    assert venue.open_cids() == set()  # nothing left on the book
    saved = json.loads(path.read_text())["state"]["levels"]
    assert all(lv["status"] == "idle" for lv in saved)
    first = set(venue.placed)
    # The next run places the grid again, with new client order ids (a generation on).
    assert runner(venue, path, sleeps).run(max_ticks=1) == EXIT_OK
    again = venue.open_cids()
    assert len(again) == 4 and not again & first


def test_leave_keeps_the_orders_and_cancel_orders_removes_them_later(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    path = tmp_path / "s.json"
    r = runner(venue, path, sleeps, on_stop="leave")
    assert r.run(max_ticks=1) == EXIT_OK
    assert len(venue.open_cids()) == 4
    assert r.state is not None
    saves: list[int] = []
    venue.orders[next(iter(venue.open_cids()))]["status"] = "closed"  # filled meanwhile: just freed
    assert cancel_orders(r.state, venue, lambda: saves.append(1)) == 3
    assert venue.open_cids() == set() and len(saves) == 4 and r.state.open_levels() == []


def test_a_cancel_that_fails_says_so_with_exit_1(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    r = runner(venue, tmp_path / "s.json", sleeps, on_stop="cancel")
    r.sleep = lambda _s: venue.failures.append(ExchangeUnreachable("down")) if r.state else None
    r.stop_requested = False
    assert r.run(max_ticks=1) == EXIT_NOT_CANCELED
    assert len(venue.open_cids()) == 4


def test_the_grid_of_another_account_is_not_resumed(tmp_path: Path) -> None:
    venue, sleeps = MemoryVenue(), []
    path = tmp_path / "s.json"
    alice = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50), "alice@keyplane http://127.0.0.1:8000")
    bob = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50), "bob@keyplane http://127.0.0.1:8000")
    Runner(alice, venue, path, interval_s=0.0, sleep=sleeps.append, on_stop="leave").run(max_ticks=1)
    with pytest.raises(Refused, match="belongs to another grid"):
        Runner(bob, venue, path, interval_s=0.0, sleep=sleeps.append)
    # A state file an earlier keyplane wrote (the id of the parameters alone) resumes when named.
    legacy = tmp_path / "legacy.json"
    Runner(CONFIG, MemoryVenue(), legacy, interval_s=0.0, sleep=sleeps.append, on_stop="leave").run(max_ticks=1)
    resumed = Runner(alice, MemoryVenue(), legacy, interval_s=0.0, sleep=sleeps.append, on_stop="leave")
    assert resumed.state is not None and resumed.state.grid_id == CONFIG.grid_id
