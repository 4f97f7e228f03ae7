"""HTTP throughput and server CPU per request: a signed endpoint next to its unsigned twin, one run.

    python -m benchmarks.auth.http [--requests 1500 --rounds 20 --connections 16]

Starts one server process (uvicorn, one worker, embedded SQLite), then alternates rounds of the
unsigned twin (on the Binance surface, so limited per client IP as every unsigned route there is),
the signed endpoint (HMAC; Ed25519 as a further series) and a twin that passes no limit at all
(``unlimited``, reported apart), each bounded by a request
count and a time limit, on loopback; many short rounds, in alternating order, so that the shared
machine's changes of speed (by ±20% within seconds) fall on every series alike. Server CPU comes
from /proc/<pid>/task/*/schedstat (nanoseconds).
Reports the median round of each series, and the ratio signed/unsigned of each round (its series
run back to back) with their median, which a drift of the shared machine's speed between rounds
does not move.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from nacl.signing import SigningKey

from benchmarks.auth.compat import create_key
from benchmarks.loadgen import build_get, free_port, run_load
from keyplane.keys.pubkeys import public_key_pem
from keyplane.services import build_services
from keyplane.settings import Settings

HOST = "127.0.0.1"


def _cpu_seconds(pid: int) -> float:
    """The server's CPU time: every thread's, in nanoseconds where the kernel keeps them
    (schedstat), else in clock ticks (stat)."""
    total, threads = 0, 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
            threads += 1
        except (OSError, ValueError, IndexError):
            break
    else:
        if threads:
            return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1500, help="Per series and round.")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data, database_url=None, redis_url=None)
        svc = build_services(settings)
        user = svc.accounts.create_user("bench@example.com", "a long and unguessable passphrase 42")
        hkey = create_key(svc, user.id, scopes=("read",))
        sk = SigningKey.generate()
        ekey = create_key(svc, user.id, key_type="ed25519", public_key=public_key_pem(bytes(sk.verify_key)))
        svc.close()

        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.auth.bench_app", str(data), str(port), hkey.info.api_key],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://{HOST}:{port}"
            for _ in range(200):
                try:
                    if httpx.get(base + "/api/v3/ping", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)

            def signed(key: str, sig_of: object) -> bytes:
                # GET requests are not replay-checked, so one signed URL can be reused within recvWindow.
                q = f"recvWindow=60000&timestamp={int(time.time() * 1000)}"
                return build_get(
                    HOST,
                    port,
                    f"/sapi/v1/account/apiRestrictions?{q}&signature={sig_of(q)}",  # type: ignore[operator]
                    {"X-MBX-APIKEY": key},
                )

            def hmac_sig(q: str) -> str:
                return hmac.new(hkey.secret.encode(), q.encode(), hashlib.sha256).hexdigest()  # type: ignore[union-attr]

            def ed_sig(q: str) -> str:
                return quote(base64.b64encode(sk.sign(q.encode()).signature).decode(), safe="")

            series = {"unsigned": [], "unlimited": [], "hmac": [], "ed25519": []}  # type: ignore[var-annotated]
            cpu = {"unsigned": [], "unlimited": [], "hmac": [], "ed25519": []}  # type: ignore[var-annotated]
            for i in range(args.rounds + 1):
                # The twin gets the same query string: the framework parses it either way.
                q = f"recvWindow=60000&timestamp={int(time.time() * 1000)}"
                requests = {
                    "unsigned": build_get(HOST, port, f"/sapi/v1/bench/apiRestrictions?{q}&signature={hmac_sig(q)}"),
                    "hmac": signed(hkey.info.api_key, hmac_sig),
                    "unlimited": build_get(HOST, port, f"/bench/open/apiRestrictions?{q}&signature={hmac_sig(q)}"),
                    "ed25519": signed(ekey.info.api_key, ed_sig),
                }
                # The signed series sits next to each twin either way; no series is always first.
                order = list(requests) if i % 2 else list(requests)[::-1]
                for name in order:
                    req = requests[name]
                    c0 = _cpu_seconds(proc.pid)
                    res = run_load(
                        HOST,
                        port,
                        req,
                        total=args.requests,
                        connections=args.connections,
                        max_seconds=args.max_seconds,
                    )
                    c1 = _cpu_seconds(proc.pid)
                    bad = {k: v for k, v in res.statuses.items() if k != 200}
                    if bad:
                        raise SystemExit(f"{name}: non-200 responses {bad}")
                    if i:  # round 0 warms up
                        series[name].append(res.rps)
                        cpu[name].append((c1 - c0) / max(res.requests, 1) * 1e6)
        finally:
            proc.terminate()
            proc.wait(10)

    out = {f"{k}_rps": round(statistics.median(v), 1) for k, v in series.items()}
    out.update({f"{k}_server_cpu_us_per_req": round(statistics.median(v), 1) for k, v in cpu.items()})
    # Each round's series run back to back: the ratio within a round, then the median over rounds,
    # so that the machine's drift between rounds (it is shared) cancels out.
    for name in ("hmac", "ed25519"):
        ratios = [s / u for s, u in zip(series[name], series["unsigned"], strict=True)]
        out[f"{name}_ratio"] = round(statistics.median(ratios), 3)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        out[f"{name}_ratio_quartiles"] = [round(quartiles[0], 3), round(quartiles[2], 3)]  # type: ignore[assignment]
    extra = [s - u for s, u in zip(cpu["hmac"], cpu["unsigned"], strict=True)]
    out["hmac_extra_cpu_us"] = round(statistics.median(extra), 1)
    # Against the twin outside the Binance surface, which passes no rate limit at all.
    ratios = [s / u for s, u in zip(series["hmac"], series["unlimited"], strict=True)]
    out["hmac_ratio_to_unlimited"] = round(statistics.median(ratios), 3)
    extra = [s - u for s, u in zip(cpu["hmac"], cpu["unlimited"], strict=True)]
    out["hmac_extra_cpu_us_over_unlimited"] = round(statistics.median(extra), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
