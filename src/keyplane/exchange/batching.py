"""Group commit: the order placements of concurrent requests share one SQLite transaction.

On SQLite a commit costs about as much as the statements of a whole order, and the database runs
one writer at a time anyway. So instead of one transaction per order, :class:`GroupCommit` queues
the placements that requests submit on the event loop and, once per loop iteration, places every
queued order with :meth:`OrderService.place_batch`: one ``BEGIN IMMEDIATE``, one SAVEPOINT per
order, one commit. The batch size follows the load by itself: while a batch runs (synchronously,
on the loop), the next requests wait in the sockets, and the following iteration queues them all.

What a client can rely on is unchanged:

- a response is sent only after the transaction that holds its order has committed, so nothing
  acknowledged is ever lost, and a crash before the commit leaves nothing of the batch applied;
- an order refused for a business reason (balance, filters, duplicate client order id...) rolls
  back to its own savepoint and gets its own error, and the rest of the batch stands;
- if the database fails (in an order or at the commit), every order of the batch gets the error
  and nothing of the batch is applied;
- orders are matched in the order they were submitted, so fills follow arrival order.

Only SQLite uses it: on PostgreSQL each order keeps a transaction of its own in a worker thread,
so that the per-market lock is never held across other clients' orders.
"""

from __future__ import annotations

import asyncio
from weakref import WeakKeyDictionary

from keyplane.errors import ServiceUnavailable
from keyplane.exchange.orders import OrderService, OrderView, Placement

# A bound on one transaction, so that a burst cannot hold the write lock (and delay every response
# of the batch) for long: 128 resting orders take a few tens of milliseconds.
MAX_BATCH = 128

_Waiter = tuple[Placement, "asyncio.Future[OrderView]"]


class GroupCommit:
    """Places orders submitted by concurrent coroutines in batches of one transaction each."""

    def __init__(self, orders: OrderService, max_batch: int = MAX_BATCH) -> None:
        self._orders = orders
        self._max = max_batch
        # One queue per event loop: a future may only be resolved on its own loop.
        self._queues: WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Waiter]] = WeakKeyDictionary()
        self.batches = 0  # transactions committed, for benchmarks and tests
        self.orders = 0  # placements they carried (accepted or refused)

    async def place(self, req: Placement) -> OrderView:
        """Place ``req`` in the next batch; returns once that batch has committed.

        Raises what :meth:`OrderService.place` raises for this order alone (an ``ExchangeError``),
        or ``ServiceUnavailable`` if the batch's transaction failed (then nothing of it applied)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = []
        fut: asyncio.Future[OrderView] = loop.create_future()
        queue.append((req, fut))
        if len(queue) == 1:
            # After the coroutines that are ready now have run up to their own submission.
            loop.call_soon(self._flush, loop)
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self._queues.get(loop, [])
        batch, rest = queue[: self._max], queue[self._max :]
        self._queues[loop] = rest
        if rest:
            loop.call_soon(self._flush, loop)
        # A request cancelled while it waited (its client went away) is not placed.
        batch = [(req, fut) for req, fut in batch if not fut.done()]
        if not batch:
            return
        try:
            results = self._orders.place_batch([req for req, _ in batch])
        except ServiceUnavailable as e:
            for _, fut in batch:
                if not fut.done():
                    err = ServiceUnavailable(e.message)
                    err.__cause__ = e
                    fut.set_exception(err)
            return
        except Exception as e:  # an unexpected failure of the batch as a whole: nothing applied
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.batches += 1
        self.orders += len(batch)
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)
