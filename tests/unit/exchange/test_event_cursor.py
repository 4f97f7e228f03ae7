"""EventCursor: a log whose ids appear out of order (late commits) is read without skipping or
repeating an event; a gap that never fills (a rolled-back insert) is given up after the grace."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keyplane.exchange.events import EventCursor


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_in_order_ids_move_the_floor() -> None:
    c = EventCursor(10)
    assert c.take([11, 12, 13]) == {11, 12, 13}
    assert c.floor == 13 and c.seen == set()
    assert c.take([]) == set()


def test_a_late_commit_is_delivered_once() -> None:
    clock = Clock()
    c = EventCursor(0, grace_s=5, clock=clock)
    assert c.take([1, 3, 4]) == {1, 3, 4}
    assert c.floor == 1  # 2 may still commit
    clock.t = 1
    assert c.take([2, 3, 4, 5]) == {2, 5}  # reads start past the floor: 3 and 4 come again
    assert c.floor == 5 and c.seen == set()


def test_a_gap_that_never_fills_is_given_up_after_the_grace() -> None:
    clock = Clock()
    c = EventCursor(0, grace_s=5, clock=clock)
    c.take([2, 3])
    assert c.floor == 0
    clock.t = 4.9
    assert c.take([2, 3]) == set() and c.floor == 0
    clock.t = 5.0
    c.take([2, 3])
    assert c.floor == 3 and c.seen == set()


@given(st.permutations(list(range(1, 40))), st.integers(1, 10))
def test_any_commit_order_delivers_every_id_exactly_once(order: list[int], chunk: int) -> None:
    c = EventCursor(0, grace_s=1e9)
    committed: set[int] = set()
    delivered: list[int] = []
    for i in range(0, len(order), chunk):
        committed |= set(order[i : i + chunk])
        delivered += sorted(c.take(x for x in committed if x > c.floor))
    assert sorted(delivered) == list(range(1, 40)) and len(delivered) == len(set(delivered))
    assert c.floor == 39
