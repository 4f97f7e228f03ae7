"""A real uvicorn server on a real loopback socket, in a thread or in a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server(uvicorn.Server):
    """uvicorn's server, stopped as soon as it is asked to, not at its next 0.1 s tick.

    uvicorn checks ``should_exit`` every 0.1 s, and its shutdown then gives open connections another
    0.1 s to close; with a server per test (a database of its own each, on PostgreSQL) that added
    0.15 s or more to every test. Here :meth:`wake` ends the wait at once, and a server with no
    connection and no request in flight skips the grace for connections. Otherwise (a kept-alive
    connection, a request in flight) it shuts down exactly as uvicorn does.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None

    def wake(self) -> None:
        loop, woken = self._loop, self._woken
        if loop is not None and woken is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                loop.call_soon_threadsafe(woken.set)

    async def main_loop(self) -> None:
        # uvicorn's main_loop, its asyncio.sleep(0.1) made wakeable.
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)
            return
        # uvicorn's shutdown when nothing is connected: stop listening, then the lifespan shutdown.
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


@dataclass
class ThreadServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        if isinstance(self.server, _Server):
            self.server.wake()
        self.thread.join(timeout=10)


def start_in_thread(app: object, host: str = "127.0.0.1") -> ThreadServer:
    port = free_port()
    # proxy_headers=False as in ``keyplane serve``: uvicorn would otherwise trust X-Forwarded-For from
    # 127.0.0.1 itself, and keyplane reads it only from KEYPLANE_TRUSTED_PROXIES.
    from keyplane.api.streams import SERVER_OPTIONS

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,
        **SERVER_OPTIONS,  # type: ignore[arg-type]
    )  # type: ignore[arg-type]
    server = _Server(config)

    def run() -> None:
        asyncio.run(server.serve())

    thread = threading.Thread(target=run, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    shown = f"[{host}]" if ":" in host else host
    return ThreadServer(f"http://{shown}:{port}", server, thread)


@dataclass
class ProcessServer:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_process(env: Mapping[str, str], log: Path, port: int | None = None) -> ProcessServer:
    """``keyplane serve`` in a subprocess with ``env`` (KEYPLANE_* settings), as a user would run it."""
    port = port or free_port()
    full_env = {**os.environ, **env, "KEYPLANE_PORT": str(port), "KEYPLANE_HOST": "127.0.0.1"}
    handle = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyplane", "serve"], env=full_env, stdout=handle, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return ProcessServer(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become healthy")
