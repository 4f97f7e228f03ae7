"""HTTP throughput and server CPU per request: a signed endpoint next to its unsigned twin, one run.

    python -m benchmarks.auth.http [--requests 20000 --rounds 3 --connections 16]

Starts one server process (uvicorn, one worker, embedded SQLite), then alternates rounds of the
unsigned twin and the signed endpoint (HMAC; Ed25519 as a third series), each bounded by a request
count and a time limit, on loopback. Server CPU comes from /proc/<pid>/stat (user+system time).
Reports the median round of each series and the ratio signed/unsigned.
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

from benchmarks.loadgen import build_get, free_port, run_load
from keyplane.keys.pubkeys import public_key_pem
from keyplane.services import build_services
from keyplane.settings import Settings

HOST = "127.0.0.1"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=30.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        settings = Settings(data_dir=data, database_url=None, redis_url=None)
        svc = build_services(settings)
        user = svc.accounts.create_user("bench@example.com", "a long and unguessable passphrase 42")
        hkey = svc.keys.create(user.id, scopes=("read",))
        sk = SigningKey.generate()
        ekey = svc.keys.create(user.id, key_type="ed25519", public_key=public_key_pem(bytes(sk.verify_key)))
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

            series = {"unsigned": [], "hmac": [], "ed25519": []}  # type: ignore[var-annotated]
            cpu = {"unsigned": [], "hmac": [], "ed25519": []}  # type: ignore[var-annotated]
            for i in range(args.rounds + 1):
                # The twin gets the same query string: the framework parses it either way.
                q = f"recvWindow=60000&timestamp={int(time.time() * 1000)}"
                requests = {
                    "unsigned": build_get(HOST, port, f"/bench/open/apiRestrictions?{q}&signature={hmac_sig(q)}"),
                    "hmac": signed(hkey.info.api_key, hmac_sig),
                    "ed25519": signed(ekey.info.api_key, ed_sig),
                }
                for name, req in requests.items():
                    c0 = _cpu_seconds(proc.pid)
                    res = run_load(
                        HOST,
                        port,
                        req,
                        total=args.requests if i else 2000,
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
    out["hmac_ratio"] = round(out["hmac_rps"] / out["unsigned_rps"], 3)
    out["ed25519_ratio"] = round(out["ed25519_rps"] / out["unsigned_rps"], 3)
    out["hmac_extra_cpu_us"] = round(out["hmac_server_cpu_us_per_req"] - out["unsigned_server_cpu_us_per_req"], 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
