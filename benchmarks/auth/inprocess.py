"""In-process cost of the whole binance-dialect verification pipeline, key cached.

    python -m benchmarks.auth.inprocess [--rounds 30 --batch 2000]

Measures what the middleware runs per signed request: ``Authenticator.read`` and
``Authenticator.authenticate_now`` (parse, cached key lookup,
status/expiry, IP allowlist, timestamp window, signature, scope, usage record) for an HMAC and an
Ed25519 key, next to the floors: bare HMAC-SHA256 (``hmac.new``) and PyNaCl's bare Ed25519 verify over
the same payload; and the HMAC pipeline again with the in-process request gate (per-key and per-IP
rate limits) switched on.

Each round times a batch of calls of each function in turn (the HMAC ones together, the Ed25519 ones
together), so that a shared machine's changes of speed fall on all of them alike, and twice over: the
thread's CPU time (``time.thread_time``) and wall time (``time.perf_counter``). Reports the median
over rounds of the per-call mean of each batch, and the best round; the Ed25519 ratio is the median
of each round's ratio, and so are ``hmac_pipeline_to_bare`` and ``hmac_pipeline_with_gate_to_bare``
(each HMAC pipeline over the bare ``hmac.new`` of the same round).
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

from benchmarks.auth.compat import OpenGate, create_key, record_loader
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


def _measure(fns: dict[str, Callable[[], object]], rounds: int, batch: int) -> dict[str, list[float]]:
    """Time each function in ``fns`` for ``rounds`` rounds of ``batch`` calls, the functions taking
    turns within every round, so that a change in the machine's speed (a shared machine's
    neighbours) falls on all of them alike. Returns each one's CPU µs per call, round by round."""
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(batch):
                fn()
            cpu[name].append((time.thread_time() - c0) / batch * 1e6)
            wall[name].append((time.perf_counter() - w0) / batch * 1e6)
    for name in fns:
        _record(name, cpu[name], wall[name])
    return cpu


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
        hkey = create_key(svc, user.id, scopes=("read", "trade"))
        sk = SigningKey.generate()
        from keyplane.keys.pubkeys import public_key_pem

        ekey = create_key(
            svc, user.id, scopes=("read", "trade"), key_type="ed25519", public_key=public_key_pem(bytes(sk.verify_key))
        )
        cache = KeyCache(record_loader(svc))
        auth = Authenticator(settings, cache, gate=OpenGate())
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
            scope = {"method": "GET", "query_string": b"", "headers": [(b"x-mbx-apikey", key.encode())]}

            def run() -> object:
                a.check_lockout("127.0.0.1")
                ctx = a.authenticate_now(a.read(rule, scope, body), "GET", rule, "127.0.0.1")
                assert ctx is not None, "the key is not cached"
                return ctx

            return run

        # Warm the cache (a miss loads from the database once).
        for key, body in ((hkey.info.api_key, hq), (ekey.info.api_key, eq)):
            scope = {"method": "GET", "query_string": b"", "headers": [(b"x-mbx-apikey", key.encode())]}
            asyncio.run(auth.authenticate(auth.read(rule, scope, body), "GET", rule, "127.0.0.1"))

        payload = hq.rsplit(b"&signature=", 1)[0]
        secret_b = hkey.secret.encode()  # type: ignore[union-attr]
        ed_sig = sk.sign(payload).signature
        vk = sk.verify_key
        r, b = args.rounds, args.batch
        hm = _measure(
            {
                "hmac_bare": lambda: hmac.new(secret_b, payload, hashlib.sha256).hexdigest(),
                "hmac_pipeline": pipeline(hkey.info.api_key, hq),
                "hmac_pipeline_with_gate": pipeline(hkey.info.api_key, hq, gated),
            },
            r,
            b,
        )
        ed = _measure(
            {
                "ed25519_bare_verify": lambda: vk.verify(payload, ed_sig),
                "ed25519_pipeline": pipeline(ekey.info.api_key, eq),
            },
            r,
            b // 4,
        )
        svc.close()
    results: dict[str, float | int] = {"payload_bytes": len(payload), **RESULTS}
    # The ratio of each round's two figures, which took turns: the median of those, and that of
    # the two medians (the same when the machine's speed held steady).
    ratios = [p / bare for p, bare in zip(ed["ed25519_pipeline"], ed["ed25519_bare_verify"], strict=True)]
    results["ed25519_ratio_to_bare"] = statistics.median(ratios)
    results["ed25519_ratio_of_medians"] = RESULTS["ed25519_pipeline_us"] / RESULTS["ed25519_bare_verify_us"]
    # The same for the HMAC pipeline over the bare hmac.new of its round: a figure that compares
    # two trees' pipelines run minutes apart without the machine's speed in between.
    ratios = [p / bare for p, bare in zip(hm["hmac_pipeline"], hm["hmac_bare"], strict=True)]
    results["hmac_pipeline_to_bare"] = statistics.median(ratios)
    ratios = [p / bare for p, bare in zip(hm["hmac_pipeline_with_gate"], hm["hmac_bare"], strict=True)]
    results["hmac_pipeline_with_gate_to_bare"] = statistics.median(ratios)
    results["ed25519_ratio_to_bare_wall"] = RESULTS["ed25519_pipeline_wall_us"] / RESULTS["ed25519_bare_verify_wall_us"]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}, indent=2))


if __name__ == "__main__":
    main()
