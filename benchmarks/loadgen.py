"""A small HTTP/1.1 keep-alive load generator on raw asyncio sockets.

It sends fixed, pre-built requests, so the client spends little CPU per request and the server is
what gets measured. Every run is bounded by a request count and a time limit, and talks to loopback.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _worker(
    host: str, port: int, request: bytes, budget: list[int], deadline: float, statuses: dict[int, int]
) -> int:
    reader, writer = await asyncio.open_connection(host, port)
    done = 0
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            writer.write(request)
            status_line = await reader.readline()
            status = int(status_line.split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
            done += 1
    finally:
        writer.close()
    return done


def build_get(host: str, port: int, target: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def run_load(
    host: str, port: int, request: bytes, *, total: int, connections: int = 16, max_seconds: float = 30.0
) -> LoadResult:
    async def main() -> LoadResult:
        budget = [total]
        statuses: dict[int, int] = {}
        start = time.perf_counter()
        deadline = start + max_seconds
        counts = await asyncio.gather(
            *(_worker(host, port, request, budget, deadline, statuses) for _ in range(connections)),
            return_exceptions=True,
        )
        elapsed = time.perf_counter() - start
        ok = sum(c for c in counts if isinstance(c, int))
        errors = sum(1 for c in counts if not isinstance(c, int))
        return LoadResult(ok, errors, elapsed, statuses)

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
