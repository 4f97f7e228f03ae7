"""Group commit on one writer thread: every exchange write of the server, off the event loop.

On SQLite a commit costs about as much as the statements of a whole order, and the database runs
one writer at a time anyway. So instead of one transaction per order, :class:`GroupCommit` queues
the placements that requests submit on the event loop and hands them, in arrival order, to ONE
writer thread, which places every queued order with :meth:`OrderService.place_batch`: one
``BEGIN IMMEDIATE``, one SAVEPOINT per order, one commit. Cancels and other writes
(:meth:`GroupCommit.run`) take the same queue, so they keep their place in the arrival order. The
batch size follows the load by itself: while the writer writes one batch, the requests that arrive
queue up, and the next batch takes them all (at most ``MAX_BATCH``).

The event loop never waits on a database lock: if another writer holds SQLite's write lock (an
admin command, a backup, the expiry sweep), only the writer thread waits (at most the busy timeout,
then the writes fail closed with a 503), while reads, public routes and the key-change poller carry
on. (An inline write on the loop used to block every request for the length of the lock wait; the
key cache then looked stale and answered 503 "database unreachable" to a burst of signed requests.)

What a client can rely on is unchanged:

- a response is sent only after the transaction that holds its order has committed, so nothing
  acknowledged is ever lost, and a crash before the commit leaves nothing of the batch applied;
- an order refused for a business reason (balance, filters, duplicate client order id, a passed
  recvWindow...) rolls back to its own savepoint and gets its own error, and the rest of the
  batch stands;
- if the database fails (in an order or at the commit), every order of the batch gets the error
  and nothing of the batch is applied;
- orders are matched in the order they were submitted, so fills follow arrival order.

Only SQLite uses it: on PostgreSQL each order keeps a transaction of its own in a worker thread,
so that the per-market lock is never held across other clients' orders.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from keyplane.errors import ServiceUnavailable
from keyplane.exchange.orders import OrderService, OrderView, Placement

# A bound on one transaction, so that a burst cannot hold the write lock (and delay every response
# of the batch) for long: 128 resting orders take a few tens of milliseconds.
MAX_BATCH = 128

T = TypeVar("T")
# A placement, or any other write as a call without arguments.
_Item = Placement | Callable[[], object]
_Waiter = tuple[_Item, "asyncio.Future[Any]"]


@dataclass
class _LoopQueue:
    """One event loop's waiters (a future may only be resolved on its own loop)."""

    waiting: deque[_Waiter] = field(default_factory=deque)
    scheduled: bool = False  # a flush is due on the loop
    writing: bool = False  # the writer thread holds a unit of this loop's waiters


class GroupCommit:
    """Places orders submitted by concurrent coroutines in batches of one transaction each, and
    runs every other exchange write, on one writer thread, in arrival order."""

    def __init__(self, orders: OrderService, max_batch: int = MAX_BATCH) -> None:
        self._orders = orders
        self._max = max_batch
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyplane-writer")
        self._queues: WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopQueue] = WeakKeyDictionary()
        self.batches = 0  # transactions committed, for benchmarks and tests
        self.orders = 0  # placements they carried (accepted or refused)

    async def place(self, req: Placement) -> OrderView:
        """Place ``req`` in the next batch; returns once that batch has committed.

        Raises what :meth:`OrderService.place` raises for this order alone (an ``ExchangeError``),
        or ``ServiceUnavailable`` if the batch's transaction failed (then nothing of it applied)."""
        view: OrderView = await self._submit(req)
        return view

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one other write (a cancel...) on the writer thread, after the writes queued before it."""
        result: T = await self._submit(functools.partial(fn, *args, **kwargs))
        return result

    async def _submit(self, item: _Item) -> Any:
        loop = asyncio.get_running_loop()
        q = self._queues.get(loop)
        if q is None:
            q = self._queues[loop] = _LoopQueue()
        fut: asyncio.Future[Any] = loop.create_future()
        q.waiting.append((item, fut))
        if not q.writing and not q.scheduled:
            # After the coroutines that are ready now have run up to their own submission.
            q.scheduled = True
            loop.call_soon(self._flush, loop, q)
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop, q: _LoopQueue) -> None:
        q.scheduled = False
        if q.writing:
            return
        unit: list[_Waiter] = []
        while q.waiting and len(unit) < self._max:
            waiter = q.waiting.popleft()
            # A request cancelled while it waited (its client went away) is not written.
            if not waiter[1].done():
                unit.append(waiter)
        if not unit:
            return
        q.writing = True
        job = self._writer.submit(self._write, [item for item, _ in unit])

        def finished(done: Future[list[object]]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
                loop.call_soon_threadsafe(self._answer, loop, q, unit, done)

        job.add_done_callback(finished)

    def _answer(
        self, loop: asyncio.AbstractEventLoop, q: _LoopQueue, unit: list[_Waiter], done: Future[list[object]]
    ) -> None:
        q.writing = False
        try:
            results = done.result()
        except Exception as e:  # the writer itself failed: nothing of the unit is known to be applied
            results = [e] * len(unit)
        for (_, fut), result in zip(unit, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        if q.waiting:
            self._flush(loop, q)

    # -- on the writer thread --------------------------------------------------------------------

    def _write(self, items: Sequence[_Item]) -> list[object]:
        """Each item's result or exception, in order: each run of placements in one transaction."""
        out: list[object] = []
        for placements, run in itertools.groupby(items, key=lambda item: isinstance(item, Placement)):
            if placements:
                out.extend(self._place_run([p for p in run if isinstance(p, Placement)]))
                continue
            for item in run:
                try:
                    out.append(item())  # type: ignore[operator]  # a run of calls: groupby does not narrow
                except Exception as e:
                    out.append(e)
        return out

    def _place_run(self, batch: list[Placement]) -> list[object]:
        try:
            results: list[object] = list(self._orders.place_batch(batch))
        except ServiceUnavailable as e:
            # Each waiter gets an exception object of its own (they are raised in different tasks).
            errors: list[object] = []
            for _ in batch:
                err = ServiceUnavailable(e.message)
                err.__cause__ = e
                errors.append(err)
            return errors
        except Exception as e:  # an unexpected failure of the batch as a whole: nothing applied
            return [e] * len(batch)
        self.batches += 1
        self.orders += len(batch)
        return results
