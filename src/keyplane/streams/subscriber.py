"""One connection as the fan-out sees it: its market streams and its bounded outbox."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from keyplane.streams.frames import text_frame
from keyplane.streams.names import Stream

MAX_QUEUE = 1000  # messages a client may fall behind before it is disconnected
MAX_BUFFER = 1 << 20  # or bytes unsent on its socket, when the hub writes to it directly


class Subscriber:
    """One connection as the hub sees it: its streams and its bounded outbox.

    With the connection's socket at hand (``transport``: uvicorn's, see keyplane.api.streams), the
    hub writes each event's frame, built once per event, straight to it, every frame a round gives
    one subscriber in one write; a subscriber whose socket has more than ``MAX_BUFFER`` bytes
    unsent is disconnected. Without it (another ASGI server), messages wait in ``outbox`` for the
    connection's send loop, at most ``max_queue`` of them."""

    def __init__(self, combined: bool = False, max_queue: int = MAX_QUEUE, transport: Any = None) -> None:
        self.combined = combined
        self.streams: dict[str, Stream] = {}
        self.max_queue = max_queue
        self.transport = transport
        self.pending: list[bytes] = []
        self.outbox: deque[str] = deque()
        self.ready = asyncio.Event()  # the outbox has something
        self.closing: tuple[int, str] | None = None
        self.final: str | None = None  # a last message the connection sends before closing
        self.closed = asyncio.Event()  # set once the connection must end: read ``closing``

    def put(self, text: str, frame: bytes | None = None) -> None:
        """Queue one message (``frame``: the same, framed, if the caller has built it)."""
        if self.closing is not None:
            return
        if self.transport is not None:
            self.pending.append(frame or text_frame(text.encode()))
            return
        if len(self.outbox) >= self.max_queue:
            self.close(1008, f"client too slow: {self.max_queue} messages waiting; read faster")
            return
        self.outbox.append(text)
        if not self.ready.is_set():
            self.ready.set()

    def flush(self) -> None:
        """Write what :meth:`put` queued for the socket, in one write."""
        if not self.pending or self.closing is not None:
            self.pending.clear()
            return
        data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending.clear()
        t = self.transport
        if t.is_closing():
            self.close(1006, "")
            return
        t.write(data)
        if t.get_write_buffer_size() > MAX_BUFFER:
            self.close(1008, f"client too slow: over {MAX_BUFFER} bytes unread; read faster")

    async def take(self) -> list[str]:
        """Everything in the outbox, once there is something."""
        await self.ready.wait()
        self.ready.clear()
        out = list(self.outbox)
        self.outbox.clear()
        return out

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
            self.pending.clear()
            self.closed.set()

    def finish(self, text: str, code: int, reason: str) -> None:
        """Send ``text`` as the last message, then close with ``code`` and ``reason``."""
        if self.closing is not None:
            return
        self.final = text
        if self.transport is not None:
            self.pending.append(text_frame(text.encode()))
            self.flush()
            self.final = None
        self.close(code, reason)
