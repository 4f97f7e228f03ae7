"""The grid's pure logic: levels, first placement, replacement after fills, deterministic ids, and
the start-up permission check."""

from __future__ import annotations

import re
from decimal import Decimal as D

import pytest

from keyplane.apps.bot.grid import (
    GridConfig,
    GridError,
    GridState,
    Level,
    after_fill,
    assign,
    client_order_id,
    fill_order,
    initial_sides,
)
from keyplane.apps.bot.runner import Refused, preflight

CONFIG = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50))


def test_levels_are_evenly_spaced() -> None:
    assert CONFIG.prices() == [D(59500), D(59750), D(60000), D(60250), D(60500)]


def test_first_placement_leaves_the_level_nearest_the_price_empty() -> None:
    assert initial_sides(CONFIG.prices(), D("60010")) == ["buy", "buy", None, "sell", "sell"]
    assert initial_sides(CONFIG.prices(), D("59000")) == [None, "sell", "sell", "sell", "sell"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": 2}, "--levels"),
        ({"lower": D(0)}, "--lower"),
        ({"lower": D(61000)}, "--lower"),
        ({"quote_per_level": D(0)}, "--quote-per-level"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "symbol": "BTC/USDT",
        "lower": D(1),
        "upper": D(2),
        "levels": 5,
        "quote_per_level": D(10),
    }
    values.update(kwargs)
    with pytest.raises(GridError, match=re.escape(message)):
        GridConfig(**values)  # type: ignore[arg-type]


def grid_state() -> GridState:
    levels = [Level(i, p) for i, p in enumerate(CONFIG.prices())]
    state = GridState(CONFIG.grid_id, CONFIG.symbol, levels)
    for level, side in zip(levels, initial_sides(CONFIG.prices(), D(60000)), strict=True):
        if side:
            assign(level, side, state.grid_id)
            level.status = "open"
    return state


def test_a_filled_buy_is_replaced_by_a_sell_one_level_up_and_back() -> None:
    state = grid_state()
    target = after_fill(state, state.levels[1])
    assert target is state.levels[2]
    assert (target.side, target.status, target.gen) == ("sell", "pending", 1)
    assert state.levels[1].status == "idle" and state.fills == 1
    target.status = "open"
    back = after_fill(state, state.levels[2])
    assert back is state.levels[1]
    assert (back.side, back.gen, back.cid) == ("buy", 2, client_order_id(state.grid_id, 1, 2))


def test_fills_found_together_land_on_empty_levels() -> None:
    state = grid_state()
    both = [state.levels[0], state.levels[1]]  # the price fell through both buys
    placed = [after_fill(state, lv) for lv in fill_order(both)]
    assert [(lv.index, lv.side) for lv in placed if lv] == [(2, "sell"), (1, "sell")]
    assert [lv.side for lv in state.levels] == [None, "sell", "sell", "sell", "sell"]


def test_a_fill_whose_target_is_taken_or_off_the_grid_places_nothing() -> None:
    state = grid_state()
    assert after_fill(state, state.levels[4]) is None  # level 3 already holds a sell
    assert after_fill(state, state.levels[0]) is None  # level 1 already holds a buy
    top = state.levels[4]
    assign(top, "buy", state.grid_id)
    assert after_fill(state, top) is None  # no level above the top


def test_client_order_ids_are_deterministic_and_binance_valid() -> None:
    a = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50))
    assert a.grid_id == CONFIG.grid_id
    assert GridConfig("BTC/USDT", D(59500), D(60500), 6, D(50)).grid_id != CONFIG.grid_id
    cid = client_order_id(a.grid_id, 199, 99999)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,36}", cid)


def test_state_round_trips_through_json() -> None:
    state = grid_state()
    again = GridState.from_json(state.to_json())
    assert again == state


def test_preflight_refuses_a_withdraw_key_and_warns_without_ip_allowlist() -> None:
    ok = {"enableReading": True, "enableWithdrawals": False, "enableSpotAndMarginTrading": True}
    with pytest.raises(Refused, match="can withdraw"):
        preflight({**ok, "enableWithdrawals": True, "ipRestrict": True})
    with pytest.raises(Refused, match="cannot trade"):
        preflight({**ok, "enableSpotAndMarginTrading": False})
    warnings = preflight({**ok, "ipRestrict": False})
    assert any("no IP allowlist" in w for w in warnings)
    assert preflight({**ok, "ipRestrict": True}) == []


@pytest.mark.parametrize(
    ("reading", "trading", "message"),
    [
        (False, True, "this key cannot read: the bot needs the read and trade scopes (it lacks read)"),
        (True, False, "this key cannot trade: the bot needs the read and trade scopes (it lacks trade)"),
        (False, False, "this key cannot read or trade: the bot needs the read and trade scopes (it lacks read, trade)"),
    ],
)
def test_preflight_refuses_a_key_without_read_or_trade(reading: bool, trading: bool, message: str) -> None:
    restrictions = {"enableReading": reading, "enableSpotAndMarginTrading": trading, "ipRestrict": True}
    with pytest.raises(Refused) as caught:
        preflight(restrictions)
    assert str(caught.value) == message
    with pytest.raises(Refused, match="cannot read"):
        preflight({"enableSpotAndMarginTrading": True})  # a key that does not say it can read


def test_grid_id_depends_on_the_account() -> None:
    one = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50), "alice@keyplane http://127.0.0.1:8000")
    two = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50), "bob@keyplane http://127.0.0.1:8000")
    other_server = GridConfig("BTC/USDT", D(59500), D(60500), 5, D(50), "alice@keyplane http://10.0.0.2:8000")
    assert len({one.grid_id, two.grid_id, other_server.grid_id}) == 3
    assert client_order_id(one.grid_id, 0, 1) != client_order_id(two.grid_id, 0, 1)
    # The id an earlier keyplane gave the same parameters, to recognise its state files.
    assert one.legacy_grid_id == two.legacy_grid_id == CONFIG.grid_id  # CONFIG names no account
