"""How fast a live user-data stream on one node closes when its key is revoked on another node.

    python -m benchmarks.streams.revocation [--keys 100 --modes broadcast poller --gap-max 0.25
                                             --timeout 5 --max-seconds 300 --seed 1]

Two ``keyplane serve`` processes, nodes A and B, on one PostgreSQL database (created and dropped
here, on ``KEYPLANE_BENCH_PG``) and, where the mode uses it, one Redis (``KEYPLANE_BENCH_REDIS``,
a prefix of its own, its keys deleted at the end), each on a free 127.0.0.1 port; started as
``benchmarks.auth.multinode`` starts them (its ``serve``, rate limits lifted). The benchmark
process creates one user and ``--keys`` HMAC keys (scope ``read``) through the services objects,
then:

1. opens one WebSocket connection per key to B's ``/ws-api/v3`` and starts the key's user-data
   stream on it (``userDataStream.subscribe.signature``, signed as Binance's WebSocket API signs:
   HMAC-SHA256 over the other params sorted by name), each answered 200 before the revocations;
2. logs in to A's console JSON API (``/v1/account/csrf``, ``/v1/account/login``: session cookie
   and CSRF token) and revokes the keys one at a time with ``POST
   /v1/account/keys/{key}/revoke`` on A: A's own key service commits the revocation and tells the
   other nodes (its Redis publisher; B evicts the key from its cache, and B's stream guard asks the
   pipeline about every open stream's key again and ends the revoked one);
3. for each, times from the revoke call's return (its HTTP response read) to the arrival at the
   client of the close frame on that key's connection (the moment the client's loop parses it:
   ``process_event`` of a ``websockets`` connection subclass), and checks that the stream sent
   ``eventStreamTerminated`` first, that the close code is 1008 and its reason says "revoked", and
   that no other connection closed before its own key's turn. The next revocation waits a random
   0 to ``--gap-max`` seconds after the close (so that the revocations fall at every phase of the
   poller and of the guard's 0.25 s timer), or until ``--timeout`` if no close came (counted as
   missed, infinite delay).

The WebSocket clients and the revoking HTTP client share one asyncio loop, which does nothing else
while a revocation is in flight: the close frame is read as soon as it arrives. Since A publishes
the change before it answers, the close can arrive before the revoke's answer is read: such a
delay is negative (counted as ``closed_before_return``); the delay from the revoke's request is
reported too.

Modes (``--modes``):

- ``broadcast``: Redis on both nodes; the database poller slowed to 5 s so that it cannot be what
  answers (the Redis key-change broadcast, ``auth/broadcast.py``, alone);
- ``poller``: no Redis at all (each node its own in-process gate), the database poller at its
  default ``key_cache_poll_s`` (0.25 s): what a revocation waits for when the broadcast does not
  reach B;
- ``deployed``: Redis and the default 0.25 s poller together, as a multi-node deployment runs.

Target: p99 <= 1 s over at least 100 revocations. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import importlib.metadata
import json
import math
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode

from benchmarks.auth.compat import create_key, encode_master_key, new_master_key
from benchmarks.auth.multinode import HOST, PG, REDIS, pg_database, serve, settings_for
from benchmarks.streams.fanout import loadavg, raise_nofile
from keyplane.services import build_services

PASSWORD = "a long bench passphrase 42"
SUBSCRIBE = "userDataStream.subscribe.signature"
TERMINATED = b'"eventStreamTerminated"'
TARGET_P99_MS = 1000.0
MIN_REVOCATIONS = 100
# mode -> (Redis for the nodes, key_cache_poll_s)
MODES: dict[str, tuple[bool, str]] = {"broadcast": (True, "5"), "poller": (False, "0.25"), "deployed": (True, "0.25")}


class TimedConnection(ClientConnection):
    """A ``websockets`` client connection that notes when its close frame, and the stream's
    termination event, arrive: when the loop parses the bytes, before any task wakes up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_at: float | None = None
        self.terminated_at: float | None = None
        self.close_frame: Close | None = None
        self.closed = asyncio.Event()

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame):
            now = time.perf_counter()
            if event.opcode is Opcode.CLOSE and self.close_at is None:
                self.close_at = now
                self.close_frame = Close.parse(event.data) if event.data else Close(1005, "")
                self.closed.set()
            elif event.opcode is Opcode.TEXT and self.terminated_at is None and TERMINATED in event.data:
                self.terminated_at = now
        super().process_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.closed.set()  # without a close frame: close_at stays None


def signed(key: str, secret: str) -> dict[str, Any]:
    params: dict[str, Any] = {"apiKey": key, "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    return {**params, "signature": hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}


class Stream:
    """One key's user-data stream on its own ``/ws-api/v3`` connection to node B."""

    def __init__(self, key: str, secret: str) -> None:
        self.key, self.secret = key, secret
        self.ws: TimedConnection | None = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self, url: str) -> None:
        ws = await connect(
            url, create_connection=TimedConnection, compression=None, ping_interval=None, open_timeout=10,
            close_timeout=2,
        )  # fmt: skip
        assert isinstance(ws, TimedConnection)
        self.ws = ws
        await ws.send(json.dumps({"id": "1", "method": SUBSCRIBE, "params": signed(self.key, self.secret)}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply.get("status") != 200:
            raise SystemExit(f"subscribe refused: {reply}")
        self.reader = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        assert self.ws is not None
        with contextlib.suppress(ConnectionClosed):
            async for _ in self.ws:
                pass

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(BaseException):
                await self.reader


def pct(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p99 of 100 values: the 99th)."""
    return ordered[max(1, math.ceil(len(ordered) * p / 100)) - 1]


def summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {}
    return {
        "min": round(ms[0], 2), "p50": round(pct(ms, 50), 2), "p95": round(pct(ms, 95), 2),
        "p99": round(pct(ms, 99), 2), "max": round(ms[-1], 2),
    }  # fmt: skip


class Console:
    """A console session on node A (cookie + CSRF), on the benchmark's loop."""

    def __init__(self, base: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=10)
        self.csrf = ""

    async def login(self, email: str) -> None:
        token = (await self.http.get("/v1/account/csrf")).json()["csrf_token"]
        r = await self.http.post(
            "/v1/account/login", json={"email": email, "password": PASSWORD}, headers={"X-CSRF-Token": token}
        )
        if r.status_code != 200 or r.json().get("needs_totp"):
            raise SystemExit(f"console login on A failed: {r.status_code} {r.text[:300]}")
        self.csrf = r.json()["csrf_token"]

    async def revoke(self, key: str) -> None:
        r = await self.http.post(f"/v1/account/keys/{key}/revoke", headers={"X-CSRF-Token": self.csrf})
        if r.status_code != 200 or r.json().get("status") != "revoked":
            raise SystemExit(f"revoke on A failed: {r.status_code} {r.text[:300]}")


async def measure(
    args: argparse.Namespace, a_port: int, b_port: int, email: str, keys: list[tuple[str, str]]
) -> dict[str, Any]:
    streams = [Stream(k, s) for k, s in keys]
    url = f"ws://{HOST}:{b_port}/ws-api/v3"
    sem = asyncio.Semaphore(32)

    async def one(s: Stream) -> None:
        async with sem:
            await s.open(url)

    t = time.perf_counter()
    await asyncio.gather(*(one(s) for s in streams))
    connect_s = time.perf_counter() - t
    console = Console(f"http://{HOST}:{a_port}")
    rng = random.Random(args.seed)
    from_return: list[float] = []
    from_request: list[float] = []
    calls: list[float] = []
    missed = premature = no_frame = before_return = bad_code = not_revoked_reason = no_event = 0
    example_reason = ""
    deadline = time.perf_counter() + args.max_seconds
    try:
        await console.login(email)
        for s in streams:
            if time.perf_counter() > deadline:
                break
            ws = s.ws
            assert ws is not None
            if ws.closed.is_set():  # closed before its key was revoked: by another key's revocation?
                premature += 1
                continue
            t0 = time.perf_counter()
            await console.revoke(s.key)
            t1 = time.perf_counter()
            calls.append(t1 - t0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.closed.wait(), args.timeout)
            if ws.close_at is None:
                missed += not ws.closed.is_set()
                no_frame += ws.closed.is_set()
                from_return.append(float("inf"))
                from_request.append(float("inf"))
            else:
                from_return.append(ws.close_at - t1)
                from_request.append(ws.close_at - t0)
                before_return += ws.close_at < t1
                frame = ws.close_frame
                assert frame is not None
                bad_code += frame.code != 1008
                not_revoked_reason += "revoked" not in frame.reason
                example_reason = example_reason or f"{frame.code} {frame.reason}"
                no_event += ws.terminated_at is None or ws.terminated_at > ws.close_at
            await asyncio.sleep(rng.uniform(0, args.gap_max))
    finally:
        await console.http.aclose()
        await asyncio.gather(*(s.close() for s in streams))
    n = len(from_return)
    ret = summary(from_return)
    return {
        "streams": len(streams),
        "connect_and_subscribe_s": round(connect_s, 2),
        "revocations": n,
        "revoke_return_to_close_ms": ret,
        "revoke_request_to_close_ms": summary(from_request),
        "revoke_call_ms": summary(calls),
        "closed_before_return": before_return,
        "over_1s": sum(1 for v in from_return if v > 1.0),
        "missed_no_close_within_timeout": missed,
        "closed_without_close_frame": no_frame,
        "close_code_not_1008": bad_code,
        "reason_without_revoked": not_revoked_reason,
        "no_termination_event_before_close": no_event,
        "closed_before_their_turn": premature,
        "example_close": example_reason,
        "target_met": bool(n >= MIN_REVOCATIONS and ret and ret["p99"] <= TARGET_P99_MS and not (missed or no_frame)),
    }


def run_mode(args: argparse.Namespace, mode: str, tmp: Path, pg_url: str, master: str) -> dict[str, Any]:
    use_redis, poll_s = MODES[mode]
    prefix = f"kpbench:{secrets.token_hex(4)}:"
    redis_url = REDIS if use_redis else None
    svc = build_services(settings_for(tmp / f"setup-{mode}", pg_url, redis_url, master, prefix))
    try:
        email = f"revoke-{mode}-{secrets.token_hex(3)}@example.com"
        user = svc.accounts.create_user(email, PASSWORD)
        issued = [create_key(svc, user.id, scopes=("read",)) for _ in range(args.keys)]
    finally:
        svc.close()
    keys = [(k.info.api_key, k.secret or "") for k in issued]
    env = {
        "KEYPLANE_DATABASE_URL": pg_url,
        "KEYPLANE_MASTER_KEYS": master,
        "KEYPLANE_REDIS_PREFIX": prefix,
        "KEYPLANE_KEY_CACHE_POLL_S": poll_s,
        "KEYPLANE_KEY_CACHE_MAX_STALENESS_S": "30",
        # every stream opens from this one address: more connections than an address may open by default
        "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "10000000/minute",
    }
    if redis_url:
        env["KEYPLANE_REDIS_URL"] = redis_url
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, a_port = serve({**env, "KEYPLANE_DATA_DIR": str(tmp / f"a-{mode}")}, tmp / f"a-{mode}.log")
        procs.append(a)
        b, b_port = serve({**env, "KEYPLANE_DATA_DIR": str(tmp / f"b-{mode}")}, tmp / f"b-{mode}.log")
        procs.append(b)
        out = {"redis": use_redis, "key_cache_poll_s": float(poll_s), "loadavg_before": loadavg()}
        out.update(asyncio.run(measure(args, a_port, b_port, email, keys)))
        out["loadavg_after"] = loadavg()
        print(f"{mode}: {json.dumps(out)}", file=sys.stderr, flush=True)
        return out
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if use_redis:
            with contextlib.suppress(redis.RedisError):
                r = redis.Redis.from_url(REDIS)
                for name in r.scan_iter(match=prefix + "*", count=1000):
                    r.delete(name)
                r.close()


def machine() -> dict[str, Any]:
    out: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                           "websockets": importlib.metadata.version("websockets")}  # fmt: skip
    with contextlib.suppress(psycopg.Error), psycopg.connect(PG, connect_timeout=5) as db:
        row = db.execute("show server_version").fetchone()
        out["postgres"] = row[0] if row else "?"
    with contextlib.suppress(redis.RedisError):
        r = redis.Redis.from_url(REDIS, socket_timeout=5)
        out["redis"] = r.info("server").get("redis_version", "?")
        r.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--keys", type=int, default=100, help="keys, streams and revocations per mode")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=["broadcast", "poller"])
    ap.add_argument("--gap-max", type=float, default=0.25, help="random pause after each close, 0 to this (s)")
    ap.add_argument("--timeout", type=float, default=5.0, help="longest wait for one close (s)")
    ap.add_argument("--max-seconds", type=float, default=300.0, help="revocations stop after this, per mode (s)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so that the nodes are stopped and the database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_nofile()
    master = encode_master_key(new_master_key())
    started = time.time()
    result: dict[str, Any] = {"machine": machine(), "keys": args.keys}
    with tempfile.TemporaryDirectory() as tmpdir, pg_database() as pg_url:
        for mode in args.modes:
            result[mode] = run_mode(args, mode, Path(tmpdir), pg_url, master)
    result["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
