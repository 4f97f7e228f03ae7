"""In-process cost of the whole binance-dialect verification pipeline, key cached.

    python -m benchmarks.auth.inprocess [--rounds 30 --batch 2000]

Measures ``Authenticator.authenticate_binance`` (header format and checksum, parse, cached key lookup,
status/expiry, IP allowlist, timestamp window, signature, gate, scope, usage record) for an HMAC and an
Ed25519 key, next to the floors: bare HMAC-SHA256 (``hmac.new``) and PyNaCl's bare Ed25519 verify over
the same payload. Reports the median over rounds of the per-call mean of each batch.
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

from keyplane.auth.keycache import KeyCache
from keyplane.auth.pipeline import Authenticator
from keyplane.auth.routes import RouteRule
from keyplane.keys.scopes import Scope
from keyplane.services import build_services
from keyplane.settings import Settings

PARAMS = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01000000&price=65000.00&recvWindow=60000"


BEST: dict[str, float] = {}


def _median_us(fn: Callable[[], object], rounds: int, batch: int, name: str = "") -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) / batch * 1e6)
    BEST[name] = min(samples)
    return statistics.median(samples)


def _median_us_async(make: Callable[[], object], rounds: int, batch: int, name: str = "") -> float:
    async def run() -> float:
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(batch):
                await make()  # type: ignore[misc]
            samples.append((time.perf_counter() - start) / batch * 1e6)
        BEST[name] = min(samples)
        return statistics.median(samples)

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=None, redis_url=None)
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

        def pipeline(key: str, body: bytes) -> Callable[[], object]:
            return lambda: auth.authenticate_binance(
                method="GET", raw_query=b"", raw_body=body, api_key_header=key, client_ip="127.0.0.1", rule=rule
            )

        # Warm the cache (a miss loads from the database once).
        asyncio.run(pipeline(hkey.info.api_key, hq)())  # type: ignore[arg-type]
        asyncio.run(pipeline(ekey.info.api_key, eq)())  # type: ignore[arg-type]

        payload = hq.rsplit(b"&signature=", 1)[0]
        secret_b = hkey.secret.encode()  # type: ignore[union-attr]
        ed_sig = sk.sign(payload).signature
        vk = sk.verify_key
        results = {
            "hmac_bare_us": _median_us(
                lambda: hmac.new(secret_b, payload, hashlib.sha256).hexdigest(), args.rounds, args.batch, "hmac_bare"
            ),
            "hmac_pipeline_us": _median_us_async(
                pipeline(hkey.info.api_key, hq), args.rounds, args.batch, "hmac_pipeline"
            ),
            "ed25519_bare_verify_us": _median_us(
                lambda: vk.verify(payload, ed_sig), args.rounds, args.batch // 4, "ed25519_bare_verify"
            ),
            "ed25519_pipeline_us": _median_us_async(
                pipeline(ekey.info.api_key, eq), args.rounds, args.batch // 4, "ed25519_pipeline"
            ),
            "payload_bytes": len(payload),
        }
        results["ed25519_ratio_to_bare"] = results["ed25519_pipeline_us"] / results["ed25519_bare_verify_us"]
        results.update({f"best_round_{k}_us": v for k, v in BEST.items()})
        svc.close()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
