"""A real uvicorn server on a real loopback socket, in a thread or in a subprocess."""

from __future__ import annotations

import asyncio
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


@dataclass
class ThreadServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_in_thread(app: object, host: str = "127.0.0.1") -> ThreadServer:
    port = free_port()
    # proxy_headers=False as in ``keyplane serve``: uvicorn would otherwise trust X-Forwarded-For from
    # 127.0.0.1 itself, and keyplane reads it only from KEYPLANE_TRUSTED_PROXIES.
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on", proxy_headers=False
    )  # type: ignore[arg-type]
    server = uvicorn.Server(config)

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
