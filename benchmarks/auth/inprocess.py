"""In-process cost of the whole binance-dialect verification pipeline, key cached.

    python -m benchmarks.auth.inprocess [--rounds 30 --batch 2000]

Measures ``Authenticator.authenticate_binance`` (header format and checksum, parse, cached key lookup,
status/expiry, IP allowlist, timestamp window, signature, scope, usage record) for an HMAC and an
Ed25519 key, next to the floors: bare HMAC-SHA256 (``hmac.new``) and PyNaCl's bare Ed25519 verify over
the same payload; and the HMAC pipeline again with the in-process request gate (per-key and per-IP
rate limits) switched on.

Each round times a batch of calls twice over: the thread's CPU time (``time.thread_time``), which
other processes on a shared machine barely disturb, and wall time (``time.perf_counter``). Reports
the median over rounds of the per-call mean of each batch, and the best round.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from nacl.signing import SigningKey

from keyplane.auth.gates import MemoryGate
from keyplane.auth.keycache import KeyCache
from keyplane.auth.pipeline import Authenticator
from keyplane.auth.routes import RouteRule
from keyplane.keys.scopes import Scope
from keyplane.services import build_services
from keyplane.settings import Settings

PARAMS = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01000000&price=65000.00&recvWindow=60000"


RESULTS: dict[str, float] = {}


def _record(name: str, cpu: list[float], wall: list[float]) -> None:
    RESULTS[f"{name}_us"] = statistics.median(cpu)
    RESULTS[f"{name}_best_us"] = min(cpu)
    RESULTS[f"{name}_wall_us"] = statistics.median(wall)


def _measure(fn: Callable[[], object], rounds: int, batch: int, name: str) -> None:
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(batch):
            fn()
        cpu.append((time.thread_time() - c0) / batch * 1e6)
        wall.append((time.perf_counter() - w0) / batch * 1e6)
    _record(name, cpu, wall)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        # Limits high enough that the gated run measures counting, never a rejection.
        settings = Settings(
            data_dir=Path(tmp),
            database_url=None,
            redis_url=None,
            rate_limit_per_key="100000000/minute",
            rate_limit_per_ip="100000000/minute",
        )
        svc = build_services(settings)
        user = svc.accounts.create_user("bench@example.com", "a long and unguessable passphrase 42")
        hkey = svc.keys.create(user.id, scopes=("read", "trade"))
        sk = SigningKey.generate()
        from keyplane.keys.pubkeys import public_key_pem

        ekey = svc.keys.create(
            user.id, scopes=("read", "trade"), key_type="ed25519", public_key=public_key_pem(bytes(sk.verify_key))
        )
        cache = KeyCache(svc.keys.load_record)
        auth = Authenticator(settings, cache)
        gated = Authenticator(settings, cache, gate=MemoryGate(settings))
        rule = RouteRule(Scope.TRADE, symbol_restricted=True)

        def signed_hmac() -> bytes:
            q = f"{PARAMS}&timestamp={int(time.time() * 1000)}"
            sig = hmac.new(hkey.secret.encode(), q.encode(), hashlib.sha256).hexdigest()  # type: ignore[union-attr]
            return f"{q}&signature={sig}".encode()

        def signed_ed() -> bytes:
            q = f"{PARAMS}&timestamp={int(time.time() * 1000)}"
            sig = quote(base64.b64encode(sk.sign(q.encode()).signature).decode(), safe="")
            return f"{q}&signature={sig}".encode()

        hq, eq = signed_hmac(), signed_ed()

        def pipeline(key: str, body: bytes, a: Authenticator = auth) -> Callable[[], object]:
            # What the middleware runs per request for a cached key: the no-I/O path.
            def run() -> object:
                ctx = a.authenticate_binance_cached("GET", b"", body, key, "127.0.0.1", rule)
                assert ctx is not None, "the key is not cached"
                return ctx

            return run

        # Warm the cache (a miss loads from the database once).
        for key, body in ((hkey.info.api_key, hq), (ekey.info.api_key, eq)):
            asyncio.run(
                auth.authenticate_binance(
                    method="GET", raw_query=b"", raw_body=body, api_key_header=key, client_ip="127.0.0.1", rule=rule
                )
            )

        payload = hq.rsplit(b"&signature=", 1)[0]
        secret_b = hkey.secret.encode()  # type: ignore[union-attr]
        ed_sig = sk.sign(payload).signature
        vk = sk.verify_key
        r, b = args.rounds, args.batch
        _measure(lambda: hmac.new(secret_b, payload, hashlib.sha256).hexdigest(), r, b, "hmac_bare")
        _measure(pipeline(hkey.info.api_key, hq), r, b, "hmac_pipeline")
        _measure(pipeline(hkey.info.api_key, hq, gated), r, b, "hmac_pipeline_with_gate")
        _measure(lambda: vk.verify(payload, ed_sig), r, b // 4, "ed25519_bare_verify")
        _measure(pipeline(ekey.info.api_key, eq), r, b // 4, "ed25519_pipeline")
        svc.close()
    results: dict[str, float | int] = {"payload_bytes": len(payload), **RESULTS}
    results["ed25519_ratio_to_bare"] = RESULTS["ed25519_pipeline_us"] / RESULTS["ed25519_bare_verify_us"]
    results["ed25519_ratio_to_bare_wall"] = RESULTS["ed25519_pipeline_wall_us"] / RESULTS["ed25519_bare_verify_wall_us"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
