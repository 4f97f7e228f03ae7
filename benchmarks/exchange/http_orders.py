"""Signed order placements per second through the HTTP API, one ``keyplane serve`` process.

    python -m benchmarks.exchange.http_orders [--orders 20000 --connections 16 --database-url URL]

Every request is a distinct signed ``POST /api/v3/order`` (HMAC, form body, as ccxt sends it), so
the replay guard accepts each one; the client signs each just before sending (about 15 µs).
Two series: ``rest`` (limit orders that rest on the book) and ``cross`` (two accounts alternate
sides at one price, so every second order fills against the previous one). Bounded by a request
count and a time limit, on loopback. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlencode

import httpx

from benchmarks.auth.compat import create_key, encode_master_key, new_master_key
from benchmarks.loadgen import free_port
from keyplane.services import build_services
from keyplane.settings import Settings

HOST = "127.0.0.1"
LIMITS = {
    "KEYPLANE_RATE_LIMIT_PER_KEY": "10000000/minute",
    "KEYPLANE_RATE_LIMIT_PER_IP": "10000000/minute",
    "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "10000000/minute",
    "KEYPLANE_LOCKOUT_FAILURES": "10000000",
}


def _request(port: int, key: str, secret: str, params: dict[str, str]) -> bytes:
    payload = urlencode({**params, "recvWindow": 60000, "timestamp": int(time.time() * 1000)})
    body = f"{payload}&signature={hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}"
    head = (
        f"POST /api/v3/order HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-MBX-APIKEY: {key}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode("latin-1")


async def _run(
    port: int, requests: list[Callable[[], bytes]], connections: int, max_seconds: float
) -> tuple[int, float, dict[int, int]]:
    queue = list(reversed(requests))
    statuses: dict[int, int] = {}
    errors: list[str] = []
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            while queue and time.perf_counter() < deadline:
                writer.write(queue.pop()())
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
                if status != 200 and len(errors) < 3:
                    errors.append(body.decode("utf-8", "replace")[:300])
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    if errors:
        print("errors:", errors, file=sys.stderr)
    return sum(statuses.values()), elapsed, statuses


def _cpu_seconds(pid: int) -> float | None:
    """The server process's CPU time (user + system), from /proc on Linux; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--database-url", default=None, help="postgresql://... (default: SQLite in a temp dir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        master = encode_master_key(new_master_key())
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url, master_keys=master, redis_url=None)
        svc = build_services(settings)
        assert svc.exchange is not None
        keys = []
        for n in range(2):
            user = svc.accounts.create_user(
                f"bench{n}-{os.getpid()}@example.com", "a long and unguessable passphrase 42"
            )
            svc.exchange.wallet.credit(user.id, "USDT", "100000000")
            svc.exchange.wallet.credit(user.id, "BTC", "100000")
            issued = create_key(svc, user.id, scopes=("read", "trade"))
            keys.append((issued.info.api_key, issued.secret))
        svc.close()

        port = free_port()
        env = {**os.environ, **LIMITS, "KEYPLANE_DATA_DIR": tmp, "KEYPLANE_PORT": str(port), "KEYPLANE_HOST": HOST,
               "KEYPLANE_MASTER_KEYS": master, "KEYPLANE_LOG_LEVEL": "warning"}  # fmt: skip
        if args.database_url:
            env["KEYPLANE_DATABASE_URL"] = args.database_url
        profile = ["-m", "cProfile", "-o", os.environ["KP_BENCH_PROFILE"]] if os.environ.get("KP_BENCH_PROFILE") else []
        proc = subprocess.Popen([sys.executable, *profile, "-m", "keyplane", "serve"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        out: dict[str, object] = {"backend": "postgresql" if args.database_url else "sqlite"}
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            for series in ("warmup", "rest", "cross"):
                total = 1000 if series == "warmup" else args.orders
                reqs: list[Callable[[], bytes]] = []
                for i in range(total):
                    key, secret = keys[i % 2]
                    if series == "cross":
                        side = "SELL" if i % 2 == 0 else "BUY"
                        price = "20000.00"
                    else:
                        side = "BUY"
                        price = f"{10000 + (i % 5000) / 100:.2f}"  # resting bids, below any ask
                    params = {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC", "price": price,
                              "quantity": "0.001", "newClientOrderId": f"bench-{series}-{i}"}  # fmt: skip
                    reqs.append(partial(_request, port, key, secret, params))
                cpu0 = _cpu_seconds(proc.pid)
                done, seconds, statuses = asyncio.run(_run(port, reqs, args.connections, args.max_seconds))
                cpu1 = _cpu_seconds(proc.pid)
                if set(statuses) != {200}:
                    raise SystemExit(f"{series}: non-200 responses {statuses}")
                if series != "warmup":
                    out[f"{series}_orders"] = done
                    out[f"{series}_orders_per_s"] = round(done / seconds, 1)
                    if cpu0 is not None and cpu1 is not None:
                        # Server CPU per order: steadier than orders/s on a shared machine.
                        out[f"{series}_server_cpu_us_per_order"] = round((cpu1 - cpu0) / done * 1e6, 1)
        finally:
            proc.terminate()
            proc.wait(10)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
