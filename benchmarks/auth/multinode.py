"""Several nodes: signed throughput with the Redis gate next to the in-process gate, Redis round
trips per request (counted, not assumed), and revocation propagation between two nodes.

    python -m benchmarks.auth.multinode [--requests 10000 --rounds 3 --revocations 100]

Needs PostgreSQL (KEYPLANE_BENCH_PG, default postgresql://postgres@127.0.0.1:5432/test) and Redis
(KEYPLANE_BENCH_REDIS, default redis://127.0.0.1:6379/0). Creates and drops its own database and
uses its own Redis prefix. Everything is on loopback and bounded in requests and time.

1. throughput: one ``keyplane serve`` process per mode, the same signed binance GET
   (``/api/v3/account``, HMAC, cached key), keep-alive load generator, median of the rounds:
   ``embedded`` (SQLite, in-process gate), ``sqlite+redis`` (same database, Redis gate: isolates
   the gate), ``postgres+redis`` (the multi-node configuration).
2. round trips: an in-process server whose Redis gate uses a connection class that counts every
   write to the socket (one write of a pipeline = one round trip), plus ``INFO commandstats``
   deltas for the commands, over N requests of each kind.
3. propagation: two ``keyplane serve`` processes (A, B) on one PostgreSQL and Redis; the key
   service of a third process (wired exactly like a node's: cache eviction + Redis publisher)
   revokes a key that B has cached, and B is probed until it refuses it. Reported with the
   broadcast (poller slowed to 5 s) and with the database poller alone (no Redis, 0.25 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
import redis.asyncio as aioredis
import uvicorn

from benchmarks.loadgen import build_get, free_port, run_load
from keyplane.accounts.stepup import StepUp
from keyplane.auth.broadcast import KeyChangePublisher
from keyplane.auth.gates import RedisGate
from keyplane.crypto.keyring import encode_master_key, new_master_key
from keyplane.services import Services, build_services
from keyplane.settings import Settings

HOST = "127.0.0.1"
PG = os.environ.get("KEYPLANE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("KEYPLANE_BENCH_REDIS", "redis://127.0.0.1:6379/0")
HIGH_LIMITS = {
    "KEYPLANE_RATE_LIMIT_PER_KEY": "1000000000/minute",
    "KEYPLANE_RATE_LIMIT_PER_IP": "1000000000/minute",
    "KEYPLANE_RATE_LIMIT_PUBLIC_PER_IP": "1000000000/minute",
    "KEYPLANE_LOCKOUT_FAILURES": "1000000",
}


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    name = f"kp_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    full = {**os.environ, **HIGH_LIMITS, **env, "KEYPLANE_PORT": str(port), "KEYPLANE_HOST": HOST}
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyplane", "serve"], env=full, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def signed_target(key: str, secret: str) -> str:
    q = f"recvWindow=60000&timestamp={int(time.time() * 1000)}"
    sig = hmac.new(secret.encode(), q.encode(), hashlib.sha256).hexdigest()
    return f"/sapi/v1/account/apiRestrictions?{q}&signature={sig}"


def settings_for(data: Path, db_url: str | None, redis_url: str | None, master: str, prefix: str) -> Settings:
    return Settings(data_dir=data, database_url=db_url, redis_url=redis_url, master_keys=master, redis_prefix=prefix)


# -- 1. throughput -------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, tmp: Path, pg_url: str, master: str) -> dict[str, Any]:
    """All three servers run at once and the rounds alternate between them, so drift in the
    machine's load hits every mode alike; the median round of each is reported."""
    modes = {
        "embedded": (None, None),
        "sqlite+redis": (None, REDIS),
        "postgres+redis": (pg_url, REDIS),
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], int, Any]] = {}
    try:
        for mode, (db_url, redis_url) in modes.items():
            data = tmp / mode.replace("+", "_")
            prefix = f"kpbench:{secrets.token_hex(4)}:"
            svc = build_services(settings_for(data, db_url, redis_url, master, prefix))
            user = svc.accounts.create_user(f"{mode}-{secrets.token_hex(3)}@example.com", "a long bench passphrase 42")
            key = svc.keys.create(user.id, step_up=StepUp.operator())
            svc.close()
            env = {"KEYPLANE_DATA_DIR": str(data), "KEYPLANE_MASTER_KEYS": master, "KEYPLANE_REDIS_PREFIX": prefix}
            if db_url:
                env["KEYPLANE_DATABASE_URL"] = db_url
            if redis_url:
                env["KEYPLANE_REDIS_URL"] = redis_url
            proc, port = serve(env, tmp / f"{mode}.log")
            servers[mode] = (proc, port, key)
        rates: dict[str, list[float]] = {mode: [] for mode in modes}
        for i in range(args.rounds + 1):
            for mode, (_, port, key) in servers.items():
                target = signed_target(key.info.api_key, key.secret or "")
                req = build_get(HOST, port, target, {"X-MBX-APIKEY": key.info.api_key})
                res = run_load(HOST, port, req, total=args.requests if i else 1000, connections=16, max_seconds=30)
                bad = {k: v for k, v in res.statuses.items() if k != 200}
                if bad or res.errors:
                    raise SystemExit(f"{mode}: non-200 responses {bad}, {res.errors} connection errors")
                if i:  # round 0 warms up
                    rates[mode].append(res.rps)
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    out: dict[str, Any] = {f"{mode}_rps": round(statistics.median(v), 1) for mode, v in rates.items()}
    out["rounds"] = {mode: [round(x) for x in v] for mode, v in rates.items()}
    out["redis_vs_embedded_ratio"] = round(out["sqlite+redis_rps"] / out["embedded_rps"], 3)
    return out


# -- 2. round trips ------------------------------------------------------------------------------


class CountingConnection(aioredis.Connection):
    """One ``send_packed_command`` = one write, answered in one read burst = one round trip."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        await super().send_packed_command(command, check_health)


def _commandstats(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def round_trips(args: argparse.Namespace, tmp: Path, pg_url: str, master: str) -> dict[str, Any]:
    from keyplane.api.app import create_app
    from keyplane.client.httpsig import sign_request

    prefix = f"kpbench:{secrets.token_hex(4)}:"
    settings = Settings(
        data_dir=tmp / "rt",
        database_url=pg_url,
        redis_url=REDIS,
        master_keys=master,
        redis_prefix=prefix,
        **{k.removeprefix("KEYPLANE_").lower(): v for k, v in HIGH_LIMITS.items()},  # type: ignore[arg-type]
    )
    svc = build_services(settings)
    user = svc.accounts.create_user(f"rt-{secrets.token_hex(3)}@example.com", "a long bench passphrase 42")
    key = svc.keys.create(user.id, scopes=("read", "trade"), step_up=StepUp.operator())
    app = create_app(settings, svc)
    # The same gate class the server builds, on a client whose connections count their writes.
    app.state.keyplane.authenticator.gate = RedisGate(
        settings, client=aioredis.Redis.from_url(REDIS, connection_class=CountingConnection)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://{HOST}:{port}"
    r = redis.Redis.from_url(REDIS)
    n = args.rt_requests
    out: dict[str, Any] = {}
    try:
        with httpx.Client(base_url=base) as client:

            def binance_get() -> httpx.Response:
                return client.get(
                    signed_target(key.info.api_key, key.secret or ""), headers={"X-MBX-APIKEY": key.info.api_key}
                )

            def binance_post() -> httpx.Response:  # state-changing: replay-checked
                body = (
                    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=100"
                    f"&timestamp={int(time.time() * 1000)}&newClientOrderId={secrets.token_hex(4)}"
                )
                sig = hmac.new((key.secret or "").encode(), body.encode(), hashlib.sha256).hexdigest()
                return client.post(
                    "/api/v3/order/test",
                    content=f"{body}&signature={sig}",
                    headers={"X-MBX-APIKEY": key.info.api_key, "Content-Type": "application/x-www-form-urlencoded"},
                )

            def native_get() -> httpx.Response:
                url = base + "/v1/keys/self"
                return client.get(url, headers=sign_request("GET", url, {}, key_id=key.info.api_key, secret=key.secret))

            def public_get() -> httpx.Response:
                return client.get("/api/v3/time")

            for name, call in (("binance_get", binance_get), ("binance_post_replay_checked", binance_post),
                               ("native_get_nonce_checked", native_get), ("public_get", public_get)):  # fmt: skip
                assert call().status_code < 500  # warm up (and open the gate's connection)
                sent0, cmds0 = CountingConnection.sent, _commandstats(r)
                for _ in range(n):
                    resp = call()
                    if resp.status_code in (401, 429, 503):
                        raise SystemExit(f"{name}: {resp.status_code} {resp.text}")
                sent, cmds1 = CountingConnection.sent - sent0, _commandstats(r)
                delta = {k: cmds1[k] - cmds0.get(k, 0) for k in cmds1 if cmds1[k] != cmds0.get(k, 0)}
                out[name] = {
                    "round_trips_per_request": round(sent / n, 3),
                    # commandstats counts the whole Redis (other clients too); the gate's own are these.
                    "commands_per_request": {
                        k: round(v / n, 2) for k, v in sorted(delta.items()) if k in ("eval", "set", "pttl", "evalsha")
                    },
                }
    finally:
        server.should_exit = True
        thread.join(10)
        svc.close()
    return out


# -- 3. propagation ------------------------------------------------------------------------------


def propagation(args: argparse.Namespace, tmp: Path, pg_url: str, master: str, *, broadcast: bool) -> dict[str, Any]:
    prefix = f"kpbench:{secrets.token_hex(4)}:"
    redis_url = REDIS if broadcast else None
    svc: Services = build_services(settings_for(tmp / "prop", pg_url, redis_url, master, prefix))
    publisher = KeyChangePublisher(svc.settings) if broadcast else None
    if publisher is not None:
        svc.keys.listeners.append(publisher)
    env = {
        "KEYPLANE_DATABASE_URL": pg_url,
        "KEYPLANE_MASTER_KEYS": master,
        "KEYPLANE_REDIS_PREFIX": prefix,
        "KEYPLANE_KEY_CACHE_POLL_S": "5" if broadcast else "0.25",
        "KEYPLANE_KEY_CACHE_MAX_STALENESS_S": "30",
    }
    if redis_url:
        env["KEYPLANE_REDIS_URL"] = redis_url
    label = "broadcast" if broadcast else "poller"
    a, _ = serve({**env, "KEYPLANE_DATA_DIR": str(tmp / f"a-{label}")}, tmp / f"a-{label}.log")
    b, b_port = serve({**env, "KEYPLANE_DATA_DIR": str(tmp / f"b-{label}")}, tmp / f"b-{label}.log")
    times: list[float] = []
    try:
        user = svc.accounts.create_user(f"prop-{secrets.token_hex(3)}@example.com", "a long bench passphrase 42")
        keys = [svc.keys.create(user.id, step_up=StepUp.operator()) for _ in range(args.revocations)]
        with httpx.Client(base_url=f"http://{HOST}:{b_port}") as client:
            for k in keys:
                target = signed_target(k.info.api_key, k.secret or "")
                hdr = {"X-MBX-APIKEY": k.info.api_key}
                assert client.get(target, headers=hdr).status_code == 200  # B caches the key
                svc.keys.revoke(k.info.api_key)  # committed and published when this returns
                start = time.perf_counter()
                deadline = start + 3.0
                while True:
                    status = client.get(target, headers=hdr).status_code
                    if status == 401:
                        times.append(time.perf_counter() - start)
                        break
                    if time.perf_counter() > deadline:
                        times.append(float("inf"))
                        break
    finally:
        for proc in (a, b):
            proc.terminate()
            proc.wait(10)
        if publisher is not None:
            publisher.close()
        svc.close()
    ms = sorted(t * 1000 for t in times)
    return {
        "revocations": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[max(0, int(len(ms) * 0.99) - 1)], 2),
        "max_ms": round(ms[-1], 2),
        "over_1s": sum(1 for t in ms if t > 1000),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rt-requests", type=int, default=300)
    ap.add_argument("--revocations", type=int, default=100)
    ap.add_argument("--only", choices=["throughput", "round_trips", "propagation"], default=None)
    args = ap.parse_args()
    master = encode_master_key(new_master_key())
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmpdir, pg_database() as pg_url:
        tmp = Path(tmpdir)
        if args.only in (None, "throughput"):
            result["throughput"] = throughput(args, tmp, pg_url, master)
        if args.only in (None, "round_trips"):
            result["round_trips"] = round_trips(args, tmp, pg_url, master)
        if args.only in (None, "propagation"):
            result["propagation_broadcast"] = propagation(args, tmp, pg_url, master, broadcast=True)
            result["propagation_poller_only"] = propagation(args, tmp, pg_url, master, broadcast=False)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
