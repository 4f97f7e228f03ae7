"""A TCP proxy the tests can cut, to take a dependency (PostgreSQL, Redis) down and bring it back."""

from __future__ import annotations

import asyncio
import threading
from contextlib import suppress

from kptest.server import free_port


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._loop.call_soon_threadsafe(self._flowing.set)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="cuttable-proxy")
        self._thread.start()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(Exception):
            while True:
                await self._flowing.wait()  # stalled: the bytes wait in the kernel, unread
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        with suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def up(self) -> None:
        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(5)

    def stall(self) -> None:
        """Go silent: keep every connection open (and accept new ones) but forward nothing, like a
        network that drops packets without a reset."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        """Forward again, including everything held back while stalled."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    def down(self) -> None:
        """Refuse new connections and cut every open one."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for w in list(self._writers):
                with suppress(Exception):
                    w.transport.abort()
            self._writers.clear()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
