"""Trade-stream fan-out to many WebSocket clients, under a signed crossing-order load.

    python -m benchmarks.streams.fanout [--clients 1000 --seconds 20 --rounds 3 --client-procs 4
                                         --client websockets|raw --compression none|deflate
                                         --connections 16 --max-orders 100000 --rate 0]

One real ``keyplane serve`` process (SQLite, a throw-away data dir, 127.0.0.1, a free port). The
open-file limit is raised to the hard limit here and in the server, so that ``--clients`` sockets
fit. ``--clients`` WebSocket clients (the ``websockets`` library's asyncio client, or with
``--client raw`` a minimal one on a bare asyncio protocol; spread over ``--client-procs``
processes of their own, each one asyncio loop: one process cannot read 1,000 clients' events fast
enough) connect to ``/ws/<symbol>@trade``.

The load is ``http_orders``' ``cross`` series: two accounts alternate SELL and BUY limit orders at
one price (each a distinct signed ``POST /api/v3/order``), so about every second order fills and
makes a trade; 16 keep-alive connections, at most ``--max-orders`` orders and ``--seconds`` seconds
per round, closed loop (``--rate R``: paced at R orders/s instead). Each round runs it twice, in
turn (with / without, then without / with, ...):

- ``with``: every client is subscribed to ``btcusdt@trade``, the market that trades;
- ``without``: the same clients, still connected, are moved (``SUBSCRIBE ethbtc@trade``, then
  ``UNSUBSCRIBE btcusdt@trade``) to a market that does not trade. The connections, their tasks and
  the server's pings are the same in both modes; what differs is exactly the fan-out of the
  trades. (The cost of the idle connections themselves is measured apart: memory and server CPU
  with ``--clients`` idle connections against none, before the rounds.)

Reported:

- signed orders/s in each mode (median over rounds), the median of the per-round ratios
  with / without (target >= 0.9), and the server's CPU time per order;
- the delay from each trade's ``T`` (the trade's timestamp, taken by the server's writer in the
  transaction that commits it; same machine, same clock) to its receipt by a client: p50, p99,
  max over every event every client received, and its two parts: ``E - T`` (until the hub encoded
  the event) and ``receipt - E`` (the fan-out: the connection's queue, the send, the socket and
  the client's own loop). Target p99 <= 50 ms;
- delivery: trades made (the market's last trade id before and after, from REST), events expected
  (clients x trades), received, missing, duplicated or out of order, clients disconnected (with
  the server's close code and reason); after each ``with`` load the clients get up to
  ``--drain-seconds`` to receive the last trade;
- memory per idle connection: the server's VmRSS (``/proc/<pid>/status``) with ``--clients``
  idle connections less with none, divided by ``--clients``.

Receipt is when the client's ``recv`` returns: if a client process is short of CPU, its own
queueing is part of the delay (the clients' CPU use is reported). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from benchmarks.auth.compat import create_key, encode_master_key, new_master_key
from benchmarks.exchange.http_orders import HOST, LIMITS, _cpu_seconds, _request, _run
from benchmarks.loadgen import free_port

PASSPHRASE = "a long and unguessable passphrase 42"
SYMBOL, IDLE_SYMBOL = "BTCUSDT", "ETHBTC"
LIVE, IDLE = f"{SYMBOL.lower()}@trade", f"{IDLE_SYMBOL.lower()}@trade"
MAX_MS = 120_000  # the delay histograms' last bin (1 ms bins)
CONNECT_AT_ONCE = 64


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# -- the clients (each client process runs one of these) ------------------------------------------


class _Conn:
    __slots__ = ("acked", "closed", "count", "last", "ooo", "stale", "task", "ws")

    def __init__(self) -> None:
        self.ws: Any = None  # a websockets ClientConnection or a _RawWS: send(), close()
        self.task: asyncio.Task[None] | None = None
        self.count = self.ooo = self.stale = 0
        self.last = 0  # the highest trade id received
        self.acked = -1  # the highest control-message id answered
        self.closed: tuple[int | None, str] | None = None


class _RawWS(asyncio.Protocol):
    """A minimal WebSocket client on a bare asyncio protocol (``--client raw``): the RFC 6455
    handshake, unmasked server frames parsed in place, pongs, the close handshake, masked text
    frames out; no extensions. A few µs per message, against tens for a full client library,
    so that on a small machine the clients leave the CPU to the server being measured."""

    def __init__(self, on_text: Any, c: _Conn) -> None:
        self.on_text, self.c = on_text, c
        self.buf = b""
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.parts: list[bytes] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time() * 1000.0
        buf = self.buf + data if self.buf else data
        if not self.open.done():
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                self.buf = buf
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.open.set_exception(ConnectionError(head[:200].decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self.open.set_result(None)
            buf = rest
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            at = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, at = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, at = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if size - at < n:
                break
            payload, pos = buf[at : at + n], at + n
            op = b0 & 0x0F
            if op in (1, 0):  # text, continuation
                if not b0 & 0x80:
                    self.parts.append(payload)
                    continue
                if self.parts:
                    payload, self.parts = b"".join([*self.parts, payload]), []
                self.on_text(self.c, payload, now)
            elif op == 9:  # ping: pong with its payload
                self._frame(0x8A, payload)
            elif op == 8:  # close: note why, answer, hang up
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode(errors="replace")
                self._frame(0x88, payload[:2])
                assert self.transport is not None
                self.transport.close()
                break
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, "connection lost without a close frame"
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))
        self.c.closed = (self.close_code, self.close_reason)

    def _frame(self, first: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        head = bytes([first, 0x80 | n]) if n < 126 else bytes([first, 0x80 | 126]) + n.to_bytes(2, "big")
        key = os.urandom(4)
        keys = (key * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big") if n else b""
        self.transport.write(head + key + masked)

    async def send(self, text: str) -> None:
        self._frame(0x81, text.encode())

    async def close(self) -> None:
        self._frame(0x88, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


class _Clients:
    def __init__(self, port: int, n: int, compression: str | None, kind: str) -> None:
        self.port = port
        self.base = f"ws://{HOST}:{port}/ws/"
        self.n, self.compression, self.kind = n, compression, kind
        self.conns: list[_Conn] = []
        self.lo = 1 << 62  # trades up to this id belong to an earlier round
        self.hist = self._hists()
        self.reconnects = 0
        self.next_id = 1
        self.loads = json.loads
        self.total, self.server, self.fanout = self.hist["total"], self.hist["server"], self.hist["fanout"]

    @staticmethod
    def _hists() -> dict[str, list[int]]:
        return {k: [0] * (MAX_MS + 1) for k in ("total", "server", "fanout")}

    def on_text(self, c: _Conn, msg: str | bytes, now: float) -> None:
        d = self.loads(msg)
        if d.get("e") != "trade":
            if isinstance(d.get("id"), int) and d["id"] > c.acked:
                c.acked = d["id"]
            return
        t = d["t"]
        if t <= self.lo:
            c.stale += 1
            return
        if t <= c.last:
            c.ooo += 1
        else:
            c.last = t
        c.count += 1
        trade_ms, event_ms = d["T"], d["E"]
        self.total[min(max(int(now - trade_ms), 0), MAX_MS)] += 1
        self.server[min(max(event_ms - trade_ms, 0), MAX_MS)] += 1
        self.fanout[min(max(int(now - event_ms), 0), MAX_MS)] += 1

    async def _open(self, c: _Conn, stream: str) -> None:
        c.closed = None
        if self.kind == "raw":
            loop = asyncio.get_running_loop()
            transport, proto = await loop.create_connection(lambda: _RawWS(self.on_text, c), HOST, self.port)
            key = base64.b64encode(os.urandom(16)).decode()
            transport.write(
                f"GET /ws/{stream} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            await asyncio.wait_for(proto.open, 60)
            c.ws = proto
            return
        from websockets.asyncio.client import connect

        c.ws = await connect(self.base + stream, compression=self.compression, ping_interval=None, proxy=None,
                             open_timeout=60, max_size=1 << 20)  # fmt: skip
        c.task = asyncio.get_running_loop().create_task(self._read(c))

    async def _read(self, c: _Conn) -> None:
        from websockets.exceptions import ConnectionClosed

        clock, on_text = time.time, self.on_text
        try:
            async for msg in c.ws:
                on_text(c, msg, clock() * 1000.0)
        except ConnectionClosed:
            pass
        finally:
            c.closed = (c.ws.close_code, c.ws.close_reason or "")

    async def connect_all(self, stream: str) -> int:
        gate = asyncio.Semaphore(CONNECT_AT_ONCE)

        async def one(c: _Conn) -> None:
            async with gate:
                await self._open(c, stream)

        self.conns = [_Conn() for _ in range(self.n)]
        await asyncio.gather(*(one(c) for c in self.conns))
        return sum(1 for c in self.conns if c.closed is None)

    async def switch(self, new: str, old: str, timeout: float) -> dict[str, Any]:
        """Reopen closed connections on ``new``; move the others from ``old`` to ``new``."""
        t0 = time.monotonic()
        sub, unsub = self.next_id, self.next_id + 1
        self.next_id += 2
        reopen = [c for c in self.conns if c.closed is not None]
        for c in reopen:
            await self._open(c, new)
            c.acked = unsub
        self.reconnects += len(reopen)
        for c in self.conns:
            if c.acked < unsub:
                await c.ws.send(json.dumps({"method": "SUBSCRIBE", "params": [new], "id": sub}))
                await c.ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": [old], "id": unsub}))
        while time.monotonic() - t0 < timeout and any(c.acked < unsub and c.closed is None for c in self.conns):
            await asyncio.sleep(0.02)
        late = sum(1 for c in self.conns if c.acked < unsub)
        return {"reopened": len(reopen), "unanswered": late, "seconds": round(time.monotonic() - t0, 3)}

    def begin(self, lo: int) -> dict[str, Any]:
        self.lo = lo
        for c in self.conns:
            c.count = c.ooo = c.stale = 0
            c.last = lo
        for h in self.hist.values():  # in place: the readers hold these lists
            h[:] = [0] * (MAX_MS + 1)
        self.open_at_begin = {id(c) for c in self.conns if c.closed is None}
        self.cpu0 = _self_cpu()
        return {"open": len(self.open_at_begin)}

    async def end(self, hi: int, drain_s: float) -> dict[str, Any]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < drain_s and any(c.last < hi and c.closed is None for c in self.conns):
            await asyncio.sleep(0.01)
        caught_up = all(c.last >= hi or c.closed is not None for c in self.conns)
        drain = round(time.monotonic() - t0, 3)
        closed: dict[str, int] = {}
        for c in self.conns:
            if c.closed is not None and id(c) in self.open_at_begin:
                key = f"{c.closed[0]} {c.closed[1]}"
                closed[key] = closed.get(key, 0) + 1
        return {
            "counts": [c.count for c in self.conns],
            "ooo": sum(c.ooo for c in self.conns),
            "stale": sum(c.stale for c in self.conns),
            "closed": closed,
            "hist": {k: {i: n for i, n in enumerate(h) if n} for k, h in self.hist.items()},
            "drain_s": drain if caught_up else None,
            "cpu_s": round(_self_cpu() - self.cpu0, 3),
        }

    async def serve(self, pipe: Connection, first: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            pipe.send({"open": await self.connect_all(first)})
        except Exception as e:  # reported to the parent, which gives up
            pipe.send({"error": f"{type(e).__name__}: {e}"})
            return
        while True:
            cmd, arg = await loop.run_in_executor(None, pipe.recv)
            if cmd == "switch":
                pipe.send(await self.switch(*arg))
            elif cmd == "begin":
                pipe.send(self.begin(arg))
            elif cmd == "end":
                pipe.send(await self.end(*arg))
            elif cmd == "stop":
                await asyncio.gather(*(c.ws.close() for c in self.conns if c.closed is None), return_exceptions=True)
                pipe.send({"stopped": True})
                return


def _client_process(port: int, n: int, compression: str | None, kind: str, first: str, pipe: Connection) -> None:
    raise_nofile()
    if kind == "raw":
        import uvloop  # as the server's loop: the clients' own per-message cost kept low

        uvloop.run(_Clients(port, n, compression, kind).serve(pipe, first))
    else:
        asyncio.run(_Clients(port, n, compression, kind).serve(pipe, first))


class _Fleet:
    """The client processes, driven in lockstep over pipes."""

    def __init__(self, port: int, clients: int, procs: int, compression: str | None, kind: str) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
        for share in shares:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_client_process, args=(port, share, compression, kind, IDLE, child), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def _gather(self, timeout: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise SystemExit("a client process did not answer in time")
            out.append(pipe.recv())
        return out

    def ask(self, cmd: str, arg: Any, timeout: float) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send((cmd, arg))
        return self._gather(timeout)

    def ready(self, timeout: float) -> int:
        docs = self._gather(timeout)
        errors = [d["error"] for d in docs if "error" in d]
        if errors:
            raise SystemExit(f"client connections failed: {errors}")
        return sum(d["open"] for d in docs)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
        for p in self.procs:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join(5)


# -- figures ------------------------------------------------------------------------------------


def _merge(hists: list[dict[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for k, n in h.items():
            out[int(k)] = out.get(int(k), 0) + n
    return out


def _quantiles(h: dict[int, int]) -> dict[str, float | None]:
    total = sum(h.values())
    if not total:
        return {"p50": None, "p99": None, "max": None, "events": 0}
    out: dict[str, Any] = {"events": total}
    keys = sorted(h)
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        need, seen = q * total, 0
        for k in keys:
            seen += h[k]
            if seen >= need:
                out[name] = k
                break
    out["max"] = keys[-1] if keys[-1] < MAX_MS else f">={MAX_MS}"
    return out


# -- the run ------------------------------------------------------------------------------------


def _setup(tmp: str, master: str) -> list[tuple[str, str]]:
    from keyplane.services import build_services
    from keyplane.settings import Settings

    svc = build_services(Settings(data_dir=Path(tmp), database_url=None, master_keys=master, redis_url=None))
    assert svc.exchange is not None
    keys = []
    for n in range(2):
        user = svc.accounts.create_user(f"fanout{n}@example.com", PASSPHRASE)
        svc.exchange.wallet.credit(user.id, "USDT", "10000000000")
        svc.exchange.wallet.credit(user.id, "BTC", "10000000")
        issued = create_key(svc, user.id, scopes=("read", "trade"))
        keys.append((issued.info.api_key, issued.secret))
    svc.close()
    return keys


def _crossing(port: int, keys: list[tuple[str, str]], tag: str, n: int) -> list[Any]:
    reqs = []
    for i in range(n):
        key, secret = keys[i % 2]
        params = {"symbol": SYMBOL, "side": "SELL" if i % 2 == 0 else "BUY", "type": "LIMIT", "timeInForce": "GTC",
                  "price": "20000.00", "quantity": "0.001", "newClientOrderId": f"fan-{tag}-{i}"}  # fmt: skip
        reqs.append(partial(_request, port, key, secret, params))
    return reqs


def _schedstat(pid: int) -> tuple[int, int]:
    """The main (event-loop) thread's time on a CPU and runnable in the run queue, in ns."""
    on, wait, _ = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    return int(on), int(wait)


async def _paced(
    port: int, requests: list[Any], connections: int, max_seconds: float, rate: float
) -> tuple[int, float, dict[int, int]]:
    """As ``http_orders._run``, but order k is not sent before ``k / rate`` seconds from the start
    (open loop at ``rate`` orders/s while the server keeps up; it never catches up in a burst
    larger than ``connections``)."""
    statuses: dict[int, int] = {}
    next_k = [0]
    start = time.perf_counter()
    deadline = start + max_seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while next_k[0] < len(requests):
                k = next_k[0]
                next_k[0] += 1
                due = start + k / rate
                if due >= deadline:
                    return
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                writer.write(requests[k]())
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return sum(statuses.values()), time.perf_counter() - start, statuses


def _idle_cpu_pct(pid: int, seconds: float) -> float | None:
    c0, t0 = _cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = _cpu_seconds(pid), time.monotonic()
    return None if c0 is None or c1 is None else round((c1 - c0) / (t1 - t0) * 100, 2)


def _open_files_limit(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return None


class _Bench:
    """One server, its clients, and the loads, mode by mode."""

    def __init__(self, args: argparse.Namespace, port: int, keys: list[tuple[str, str]], proc: Any) -> None:
        self.args, self.port, self.keys, self.proc = args, port, keys, proc
        self.rest = httpx.Client(base_url=f"http://{HOST}:{port}", timeout=10)
        self.fleet: _Fleet | None = None

    def last_trade_id(self) -> int:
        rows = self.rest.get("/api/v3/trades", params={"symbol": SYMBOL, "limit": 1}).json()
        return int(rows[-1]["id"]) if rows else 0

    def connect(self, compression: str | None) -> dict[str, Any]:
        """Memory and idle CPU with no client, then with every client connected and idle."""
        a, pid = self.args, self.proc.pid
        time.sleep(1.0)
        rss_none = vm_rss_kb(pid)
        cpu_none = _idle_cpu_pct(pid, a.idle_seconds)
        t0 = time.monotonic()
        self.fleet = _Fleet(self.port, a.clients, a.client_procs, compression, a.client)
        opened = self.fleet.ready(180.0)
        connect_s = round(time.monotonic() - t0, 1)
        if opened != a.clients:
            raise SystemExit(f"only {opened} of {a.clients} clients connected")
        time.sleep(2.0)
        rss_idle = vm_rss_kb(pid)
        cpu_idle = _idle_cpu_pct(pid, a.idle_seconds)
        return {
            "connect_s": connect_s,
            "memory": {
                "server_rss_kb_no_clients": rss_none,
                "server_rss_kb_idle_clients": rss_idle,
                "kb_per_idle_connection": round((rss_idle - rss_none) / a.clients, 1),
            },
            "idle_server_cpu_pct": {"no_clients": cpu_none, "idle_clients": cpu_idle},
        }

    def one_mode(self, r: int, mode: str) -> dict[str, Any]:
        a, fleet, pid = self.args, self.fleet, self.proc.pid
        assert fleet is not None
        doc: dict[str, Any] = {}
        if mode == "with":
            doc["switch_in"] = _sum_switch(fleet.ask("switch", (LIVE, IDLE, 30.0), 60.0))
        time.sleep(0.5)  # the hub's first read of the market sets where its trades start
        lo = self.last_trade_id()
        if mode == "with":
            doc["open_at_start"] = sum(d["open"] for d in fleet.ask("begin", lo, 10.0))
        reqs = _crossing(self.port, self.keys, f"{r}-{mode}", a.max_orders)
        if a.rate > 0:
            load = _paced(self.port, reqs, a.connections, a.seconds, a.rate)
        else:
            load = _run(self.port, reqs, a.connections, a.seconds)
        la0, cpu0, me0, ss0 = loadavg(), _cpu_seconds(pid), _self_cpu(), _schedstat(pid)
        done, seconds, statuses = asyncio.run(load)
        cpu1, me1, ss1 = _cpu_seconds(pid), _self_cpu(), _schedstat(pid)
        hi = self.last_trade_id()
        server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
        doc.update({
            "orders": done, "seconds": round(seconds, 2), "orders_per_s": round(done / seconds, 1),
            "statuses": {str(k): v for k, v in statuses.items()}, "trades": hi - lo,
            "order_mean_latency_ms": round(a.connections * seconds / done * 1e3, 1) if done and not a.rate else None,
            "server_cpu_us_per_order": round(server_cpu / done * 1e6, 1) if server_cpu and done else None,
            "server_cpu_pct": round(server_cpu / seconds * 100, 1) if server_cpu else None,
            "loadgen_cpu_pct": round((me1 - me0) / seconds * 100, 1), "loadavg_1m": la0[0],
            # The server's event-loop thread: the share of the load's wall time it spent on a CPU,
            # and runnable but waiting for one (other processes: the clients, the load, others').
            "loop_on_cpu_pct": round((ss1[0] - ss0[0]) / 1e9 / seconds * 100, 1),
            "loop_waiting_for_cpu_pct": round((ss1[1] - ss0[1]) / 1e9 / seconds * 100, 1),
        })  # fmt: skip
        if mode == "with":
            ends = fleet.ask("end", (hi, a.drain_seconds), a.drain_seconds + 60.0)
            doc.update(_delivery(ends, hi - lo, a.clients, seconds))
            doc["switch_out"] = _sum_switch(fleet.ask("switch", (IDLE, LIVE, 30.0), 60.0))
        return doc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=20.0, help="Order load per round and mode.")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-orders", type=int, default=100_000, help="Order cap per round and mode.")
    ap.add_argument("--connections", type=int, default=16, help="Order-load connections.")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="Orders/s, open loop (0: as fast as the server answers, as http_orders).")  # fmt: skip
    ap.add_argument("--client-procs", type=int, default=4, help="Processes the WebSocket clients are spread over.")
    ap.add_argument("--client", choices=("websockets", "raw"), default="websockets",
                    help="The websockets library's asyncio client, or a minimal one on a bare protocol.")  # fmt: skip
    ap.add_argument("--compression", choices=("none", "deflate"), default="none",
                    help="What websockets clients offer: permessage-deflate (its default) or nothing.")  # fmt: skip
    ap.add_argument("--drain-seconds", type=float, default=10.0, help="After a load, how long clients may catch up.")
    ap.add_argument("--idle-seconds", type=float, default=3.0, help="Server CPU sampled idle, with and without.")
    args = ap.parse_args()
    compression = None if args.compression == "none" else "deflate"
    if args.client == "raw" and compression:
        raise SystemExit("--client raw offers no compression")

    nofile = raise_nofile()
    if nofile < args.clients + 256:
        raise SystemExit(f"open-file hard limit {nofile} is too low for {args.clients} clients")
    t_start = time.monotonic()
    out: dict[str, Any] = {
        "clients": args.clients, "client": args.client, "client_procs": args.client_procs,
        "compression": args.compression, "seconds": args.seconds, "rounds": args.rounds,
        "connections": args.connections, "rate": args.rate, "nproc": os.cpu_count(), "nofile": nofile,
        "loadavg_start": loadavg(),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        master = encode_master_key(new_master_key())
        keys = _setup(tmp, master)
        port = free_port()
        env = {**os.environ, **LIMITS, "KEYPLANE_DATA_DIR": tmp, "KEYPLANE_PORT": str(port), "KEYPLANE_HOST": HOST,
               "KEYPLANE_MASTER_KEYS": master, "KEYPLANE_LOG_LEVEL": "warning"}  # fmt: skip
        err_path = Path(tmp) / "server.err"
        with err_path.open("wb") as err:  # the server inherits the raised open-file limit
            proc = subprocess.Popen([sys.executable, "-m", "keyplane", "serve"], env=env, stdout=subprocess.DEVNULL,
                                    stderr=err)  # fmt: skip
        bench = _Bench(args, port, keys, proc)
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise SystemExit("the server did not start")
            out["server_nofile"] = _open_files_limit(proc.pid)
            asyncio.run(_run(port, _crossing(port, keys, "warmup", 2000), args.connections, 30.0))
            out.update(bench.connect(compression))
            rounds: list[dict[str, Any]] = []
            for r in range(args.rounds):
                pair: dict[str, Any] = {"round": r + 1}
                for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
                    pair[mode] = doc = bench.one_mode(r, mode)
                    shown = json.dumps({k: v for k, v in doc.items() if k != "hists"})
                    print(f"round {r + 1} {mode}: {shown}", file=sys.stderr, flush=True)
                rounds.append(pair)
            out.update(_summary(rounds))
            out["rounds_detail"] = [
                {
                    "round": p["round"],
                    **{m: {k: v for k, v in p[m].items() if k != "hists"} for m in ("with", "without")},
                }
                for p in rounds
            ]
        finally:
            if bench.fleet is not None:
                bench.fleet.stop()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            server_err = err_path.read_text(errors="replace") if err_path.exists() else ""
        out["server_log_tail"] = server_err[-1500:] if server_err.strip() else ""
    out["loadavg_end"] = loadavg()
    out["total_s"] = round(time.monotonic() - t_start, 1)
    print(json.dumps(out, indent=2))


def _sum_switch(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "reopened": sum(d["reopened"] for d in docs),
        "unanswered": sum(d["unanswered"] for d in docs),
        "seconds": max(d["seconds"] for d in docs),
    }


def _delivery(ends: list[dict[str, Any]], trades: int, clients: int, seconds: float) -> dict[str, Any]:
    counts = [n for d in ends for n in d["counts"]]
    closed: dict[str, int] = {}
    for d in ends:
        for k, n in d["closed"].items():
            closed[k] = closed.get(k, 0) + n
    received = sum(counts)
    drains = [d["drain_s"] for d in ends]
    return {
        "events_expected": trades * clients,
        "events_received": received,
        "events_missing": trades * clients - received + sum(d["ooo"] for d in ends),
        "clients_with_every_trade": sum(1 for n in counts if n >= trades),
        "fewest_trades_one_client_got": min(counts) if counts else 0,
        "out_of_order_or_duplicate": sum(d["ooo"] for d in ends),
        "stale": sum(d["stale"] for d in ends),
        "clients_closed": closed,
        "drain_s": None if None in drains else max(drains),
        "client_cpu_pct": round(sum(d["cpu_s"] for d in ends) / seconds * 100, 1),
        "events_per_s": round(received / seconds),
        "hists": {k: _merge([d["hist"][k] for d in ends]) for k in ("total", "server", "fanout")},
    }


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(mode: str, key: str) -> float | None:
        vals = [p[mode][key] for p in rounds if p[mode].get(key) is not None]
        return round(statistics.median(vals), 1) if vals else None

    ratios = [p["with"]["orders_per_s"] / p["without"]["orders_per_s"] for p in rounds if p["without"]["orders_per_s"]]
    hists = {k: _merge([p["with"]["hists"][k] for p in rounds]) for k in ("total", "server", "fanout")}
    delay = {k: _quantiles(h) for k, h in hists.items()}
    expected = sum(p["with"]["events_expected"] for p in rounds)
    missing = sum(p["with"]["events_missing"] for p in rounds)
    closed = sum(n for p in rounds for n in p["with"]["clients_closed"].values())
    ratio = round(statistics.median(ratios), 3) if ratios else None
    p99 = delay["total"]["p99"]
    return {
        "orders_per_s": {"with": med("with", "orders_per_s"), "without": med("without", "orders_per_s")},
        "ratio_with_over_without": ratio,
        "ratios_per_round": [round(x, 3) for x in ratios],
        "server_cpu_us_per_order": {
            "with": med("with", "server_cpu_us_per_order"),
            "without": med("without", "server_cpu_us_per_order"),
        },
        "trades_per_s_with": round(statistics.median(p["with"]["trades"] / p["with"]["seconds"] for p in rounds), 1),
        "events_per_s_with": med("with", "events_per_s"),
        "delay_ms": {
            "trade_T_to_receipt": delay["total"],
            "T_to_E_server": delay["server"],
            "E_to_receipt_fanout": delay["fanout"],
        },
        "delivery": {
            "events_expected": expected,
            "events_missing": missing,
            "clients_closed_by_server": closed,
            "close_reasons": _merge_closed(rounds),
        },
        "targets": {
            "ratio_ge_0.9": ratio is not None and ratio >= 0.9,
            "p99_le_50ms": isinstance(p99, int) and p99 <= 50,
            "no_loss": missing == 0 and closed == 0,
        },
    }


def _merge_closed(rounds: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in rounds:
        for k, n in p["with"]["clients_closed"].items():
            out[k] = out.get(k, 0) + n
    return out


if __name__ == "__main__":
    main()
