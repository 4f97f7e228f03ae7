"""A local order book kept from the diff-depth stream, as ccxt.pro and python-binance keep one,
equals REST depth after any sequence of orders and cancels: the hub's update ids line up with the
snapshot's ``lastUpdateId`` (Binance's procedure: drop events with ``u <= lastUpdateId``, the first
applied has ``U <= lastUpdateId + 1 <= u``, each next ``U`` is the previous ``u + 1``), whenever the
snapshot is taken, for both update speeds. Property-tested on a real exchange and database."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyplane.exchange.errors import ExchangeError
from keyplane.exchange.params import parse_new_order
from keyplane.services import Services, build_services
from keyplane.streams.hub import Hub, Subscriber
from keyplane.streams.names import parse
from kptest.exchange import clear_books

SYMBOL = "BTCUSDT"


@pytest.fixture
def svc(make_settings) -> Iterator[Services]:
    s = build_services(make_settings())
    yield s
    clear_books(s)
    s.close()


op = st.one_of(
    st.tuples(st.just("order"), st.integers(0, 1), st.sampled_from(["BUY", "SELL"]), st.integers(0, 6),
              st.integers(1, 5), st.sampled_from(["GTC", "IOC"])),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
)  # fmt: skip


def _apply(book: tuple[dict[str, str], dict[str, str]], event: dict) -> None:
    for side, levels in ((book[0], event["b"]), (book[1], event["a"])):
        for price, qty in levels:
            if Decimal(qty) == 0:
                side.pop(price, None)
            else:
                side[price] = qty


async def _until(sub: Subscriber, seq: int, deadline_s: float) -> list[dict]:
    """Every message until one whose update id reaches ``seq``."""
    out: list[dict] = []
    end = time.monotonic() + deadline_s
    while not out or out[-1]["data"]["u"] < seq:
        for text in await asyncio.wait_for(sub.take(), max(0.01, end - time.monotonic())):
            doc = json.loads(text)
            if doc["data"].get("e") == "depthUpdate":
                out.append(doc)
    return out


def test_a_book_kept_from_diff_depth_equals_rest_depth(svc):
    ex = svc.exchange
    m = ex.markets[SYMBOL]
    users = [svc.accounts.create_user(f"d{secrets.token_hex(6)}@example.com", "correct horse battery staple").id
             for _ in range(2)]  # fmt: skip
    for uid in users:
        ex.wallet.credit(uid, "USDT", "1000000")
        ex.wallet.credit(uid, "BTC", "1000")
    placed: list[tuple[int, int]] = []
    checked = {"events": 0, "snapshots_mid_stream": 0}

    async def one(sequence, snapshot_at: int) -> None:
        hub = Hub(ex, poll_s=0.2)
        ex.orders.on_commit.append(hub.poke)
        sub = Subscriber(combined=True, max_queue=100_000)
        task = asyncio.create_task(hub.run())
        try:
            await hub.subscribe(
                sub, [parse(f"{SYMBOL.lower()}@depth@100ms", ex.markets), parse(f"{SYMBOL.lower()}@depth", ex.markets)]
            )
            start = ex.data.depth(m, 5000)[0]  # the hub has read the book before subscribe() returned
            snapshot = None
            for i, o in enumerate(sequence):
                if i == snapshot_at:
                    snapshot = ex.data.depth(m, 5000)
                try:
                    if o[0] == "order":
                        _, u, side, level, lots, tif = o
                        price = str(Decimal("100") + Decimal("0.01") * level)
                        params = {"symbol": SYMBOL, "side": side, "type": "LIMIT", "timeInForce": tif,
                                  "price": price, "quantity": str(Decimal("0.1") * lots)}  # fmt: skip
                        view = await asyncio.to_thread(ex.orders.place, users[u], parse_new_order(params, ex.markets))
                        placed.append((users[u], view.id))
                    elif placed:
                        uid, oid = placed[o[1] % len(placed)]
                        await asyncio.to_thread(ex.orders.cancel, uid, m, oid, None)
                except ExchangeError:
                    pass
            if snapshot is None:
                snapshot = ex.data.depth(m, 5000)
            final = ex.data.depth(m, 5000)
            if final[0] == start:
                return  # nothing changed the book: no event is due
            events = await _until(sub, final[0], 5.0)
            for name in (f"{SYMBOL.lower()}@depth@100ms", f"{SYMBOL.lower()}@depth"):
                stream = [e["data"] for e in events if e["stream"] == name]
                if name.endswith("@depth"):  # the one-second stream may not have caught up yet
                    with contextlib.suppress(TimeoutError):
                        while not stream or stream[-1]["u"] < final[0]:
                            more = await _until(sub, final[0], 3.0)
                            stream += [e["data"] for e in more if e["stream"] == name]
                for a, b in itertools.pairwise(stream):
                    assert b["U"] == a["u"] + 1, (a, b)
                last_id, bids, asks = snapshot
                book = (
                    {m.price_text(p): m.qty_text(q) for p, q in bids},
                    {m.price_text(p): m.qty_text(q) for p, q in asks},
                )
                applied = [e for e in stream if e["u"] > last_id]
                if applied:
                    assert applied[0]["U"] <= last_id + 1 <= applied[0]["u"], (last_id, applied[0])
                    if last_id > start:
                        checked["snapshots_mid_stream"] += 1
                for e in applied:
                    _apply(book, e)
                    checked["events"] += 1
                want = ({m.price_text(p): m.qty_text(q) for p, q in final[1]},
                        {m.price_text(p): m.qty_text(q) for p, q in final[2]})  # fmt: skip
                assert book == want, (name, start, snapshot, final, stream)
        finally:
            ex.orders.on_commit.remove(hub.poke)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @settings(max_examples=30, deadline=None)
    @given(sequence=st.lists(op, min_size=5, max_size=20), snapshot_at=st.integers(1, 12))
    def every_sequence(sequence, snapshot_at):
        asyncio.run(one(sequence, snapshot_at))

    every_sequence()
    # Against vacuous passes: events were applied, to snapshots taken while the stream ran.
    assert checked["events"] > 15 and checked["snapshots_mid_stream"] >= 3, checked
