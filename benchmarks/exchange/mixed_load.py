"""A bounded mixed load of signed requests on a healthy database: how many answers are 503s?

    python -m benchmarks.exchange.mixed_load [--seconds 60 --rate 100 --database-url URL]

One ``keyplane serve`` process with its background tasks running (key-change poller, usage flush,
auth-failure audit, expiry sweep, withdrawals), and an open-loop client that starts ``--rate``
requests per second for ``--seconds`` (at most ``--max-requests``): signed reads (``account``,
``openOrders``), limit orders (some rest, some cross) and cancels of the account's own open orders,
plus a few requests with a bad signature so the failure audit writes too. With the database healthy
every answer should be a 200 or a business refusal (400); any 503 is counted and its body printed.
Loopback only. Prints JSON; exits 1 if any answer was a 503.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx

from benchmarks.loadgen import free_port
from keyplane.accounts.stepup import StepUp
from keyplane.crypto.keyring import encode_master_key, new_master_key
from keyplane.services import build_services
from keyplane.settings import Settings

HOST = "127.0.0.1"
LIMITS = {
    "KEYPLANE_RATE_LIMIT_PER_KEY": "10000000/minute",
    "KEYPLANE_RATE_LIMIT_PER_IP": "10000000/minute",
    "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "10000000/minute",
    "KEYPLANE_LOCKOUT_FAILURES": "10000000",
}


class Load:
    def __init__(self, client: httpx.AsyncClient, keys: list[tuple[str, str]], seed: int) -> None:
        self.client = client
        self.keys = keys
        self.rng = random.Random(seed)  # a repeatable mix, not a secret
        self.open: dict[int, list[int]] = {i: [] for i in range(len(keys))}
        self.statuses: dict[int, int] = {}
        self.unavailable: list[dict[str, object]] = []
        self.latencies: list[float] = []
        self.by_kind: dict[str, list[float]] = {}
        self.kinds: dict[str, int] = {}
        self.t0 = time.monotonic()

    async def signed(
        self, who: int, method: str, path: str, params: dict[str, str], bad: bool = False
    ) -> httpx.Response:
        key, secret = self.keys[who]
        payload = urlencode({**params, "recvWindow": 10000, "timestamp": int(time.time() * 1000)})
        sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if bad:
            sig = "0" * 64
        signed = f"{payload}&signature={sig}"
        headers = {"X-MBX-APIKEY": key}
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            return await self.client.request(method, path, content=signed, headers=headers)
        return await self.client.request(method, f"{path}?{signed}", headers=headers)

    async def one(self) -> None:
        who = self.rng.randrange(len(self.keys))
        roll = self.rng.random()
        started = time.monotonic()
        if roll < 0.02:
            kind, resp = "bad_signature", await self.signed(who, "GET", "/api/v3/account", {}, bad=True)
        elif roll < 0.27:
            kind, resp = "account", await self.signed(who, "GET", "/api/v3/account", {})
        elif roll < 0.45:
            kind, resp = "open_orders", await self.signed(who, "GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
        elif roll < 0.75 or not self.open[who]:
            side = self.rng.choice(["BUY", "SELL"])
            # Mostly resting orders around 20000; one in five crosses the other side.
            offset = self.rng.randint(1, 500) / 100
            cross = self.rng.random() < 0.2
            price = 20000 + (offset if (side == "SELL") != cross else -offset)
            params = {"symbol": "BTCUSDT", "side": side, "type": "LIMIT", "timeInForce": "GTC",
                      "price": f"{price:.2f}", "quantity": "0.001"}  # fmt: skip
            kind, resp = "order", await self.signed(who, "POST", "/api/v3/order", params)
            if resp.status_code == 200 and resp.json().get("status") in ("NEW", "PARTIALLY_FILLED"):
                self.open[who].append(int(resp.json()["orderId"]))
        else:
            order_id = self.open[who].pop(self.rng.randrange(len(self.open[who])))
            params = {"symbol": "BTCUSDT", "orderId": str(order_id)}
            kind, resp = "cancel", await self.signed(who, "DELETE", "/api/v3/order", params)
        self.latencies.append(time.monotonic() - started)
        self.by_kind.setdefault(kind, []).append(time.monotonic() - started)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.statuses[resp.status_code] = self.statuses.get(resp.status_code, 0) + 1
        if resp.status_code == 503:
            self.unavailable.append({"t": round(started - self.t0, 2), "kind": kind, "body": resp.text[:200]})


async def drive(port: int, keys: list[tuple[str, str]], seconds: float, rate: float, max_requests: int) -> Load:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=20, limits=limits) as client:
        load = Load(client, keys, seed=1)
        pending: set[asyncio.Task[None]] = set()
        errors: dict[str, int] = {}

        async def guarded() -> None:
            try:
                await load.one()
            except httpx.HTTPError as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

        start = time.monotonic()
        sent = 0
        while sent < max_requests and time.monotonic() - start < seconds:
            if len(pending) < 256:  # bounded in flight: a stalled server is not buried in requests
                task = asyncio.create_task(guarded())
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            next_at = start + sent / rate
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending, timeout=30)
        load.kinds.update({f"client_error_{k}": v for k, v in errors.items()})
        return load


def _hold_lock(path: Path, hold_s: float, every_s: float, stop: threading.Event) -> None:
    """Another writer on the same SQLite file: BEGIN IMMEDIATE, a write, ``hold_s`` of work, COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        while not stop.wait(every_s):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE ex_markets SET trade_seq = trade_seq WHERE symbol = 'ETHBTC'")
            stop.wait(hold_s)
            conn.execute("COMMIT")
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=100.0, help="requests started per second")
    ap.add_argument("--max-requests", type=int, default=20000)
    ap.add_argument("--database-url", default=None, help="postgresql://... (default: SQLite in a temp dir)")
    ap.add_argument(
        "--hold-lock-s", type=float, default=0.0,
        help="SQLite: another writer (an admin job, a backup) holds the write lock this long...",
    )  # fmt: skip
    ap.add_argument("--hold-every-s", type=float, default=10.0, help="... once every this many seconds")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        master = encode_master_key(new_master_key())
        settings = Settings(data_dir=Path(tmp), database_url=args.database_url, master_keys=master, redis_url=None)
        svc = build_services(settings)
        assert svc.exchange is not None
        keys = []
        for n in range(4):
            user = svc.accounts.create_user(f"mixed{n}-{os.getpid()}@example.com", "a long and unguessable passphrase")
            svc.exchange.wallet.credit(user.id, "USDT", "100000000")
            svc.exchange.wallet.credit(user.id, "BTC", "100000")
            issued = svc.keys.create(user.id, scopes=("read", "trade"), step_up=StepUp.operator())
            assert issued.secret is not None
            keys.append((issued.info.api_key, issued.secret))
        svc.close()

        port = free_port()
        env = {**os.environ, **LIMITS, "KEYPLANE_DATA_DIR": tmp, "KEYPLANE_PORT": str(port), "KEYPLANE_HOST": HOST,
               "KEYPLANE_MASTER_KEYS": master, "KEYPLANE_LOG_LEVEL": "warning"}  # fmt: skip
        if args.database_url:
            env["KEYPLANE_DATABASE_URL"] = args.database_url
        log = Path(tmp) / "server.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen([sys.executable, "-m", "keyplane", "serve"], env=env, stdout=handle,
                                    stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            stop = threading.Event()
            holder = None
            if args.hold_lock_s > 0 and not args.database_url:
                holder = threading.Thread(
                    target=_hold_lock, args=(Path(tmp) / "keyplane.db", args.hold_lock_s, args.hold_every_s, stop)
                )
                holder.start()
            try:
                load = asyncio.run(drive(port, keys, args.seconds, args.rate, args.max_requests))
            finally:
                stop.set()
                if holder is not None:
                    holder.join(args.hold_lock_s + 5)
        finally:
            proc.terminate()
            proc.wait(10)
        lat = sorted(load.latencies) or [0.0]
        out = {
            "backend": "postgresql" if args.database_url else "sqlite",
            "requests": sum(load.statuses.values()),
            "statuses": load.statuses,
            "kinds": load.kinds,
            "latency_ms": {
                "p50": round(lat[len(lat) // 2] * 1000, 1),
                "p99": round(lat[int(len(lat) * 0.99)] * 1000, 1),
                "max": round(lat[-1] * 1000, 1),
            },
            "max_ms_by_kind": {k: round(max(v) * 1000, 1) for k, v in load.by_kind.items()},
            "unavailable": load.unavailable[:20],
            "server_warnings": [line for line in log.read_text(errors="replace").splitlines() if "WARNING" in line][
                :20
            ],
        }
    print(json.dumps(out, indent=2))
    sys.exit(1 if load.statuses.get(503) else 0)


if __name__ == "__main__":
    main()
