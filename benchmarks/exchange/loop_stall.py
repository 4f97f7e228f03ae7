"""The event loop's longest stall under an order load, while the expiry sweep and CLI writes run.

    python -m benchmarks.exchange.loop_stall [--seconds 20 --orders 30000 --rounds 2 --cli-writes 4
                                              --sweep-every 2 --keys 300 --watchdog-ms 0 --no-gc-freeze]

Each round starts a real ``keyplane serve`` (``benchmarks.exchange.stall_server``: the command
itself, plus a coroutine on the server's loop that sleeps 1 ms again and again and records how late
each wake-up is), on SQLite in a data dir of its own, on 127.0.0.1 and a free port, and runs a
bounded load of signed ``POST /api/v3/order`` (resting limit bids, HMAC, 16 keep-alive
connections, each request signed anew; at most ``--orders`` orders and ``--seconds`` seconds), in
two modes that take turns round by round:

- ``quiet``: the load alone (the sweep's minute never comes);
- ``busy``: the same load while (a) the server's background expiry sweep runs every
  ``--sweep-every`` seconds over ``--keys`` keys, a fifth of which expire during the load (each
  sweep a write transaction that marks them expired and audits them), and the last-used flush
  runs every second; and (b) ``--cli-writes`` operator CLI writes run one after the other in
  processes of their own on the same data dir (``keyplane admin credit``, a deposit that writes
  the wallet tables the orders write, taking turns with ``keyplane admin sweep``).

Reports per mode the median over rounds of: orders/s, the longest stall (how late the 1 ms sleep
woke) within the load's window, its 99th and 99.9th percentiles, how many wake-ups were over 5 and
10 ms, and the longest stall while a sweep ran and while a CLI write ran; and the same figures less
the time the loop's thread spent runnable in the OS's run queue (``*_less_run_queue``, from the
kernel's schedstat for that thread): on a shared machine, the part of a stall that is the other
processes', not the server's, and for the worst stall how much of it the thread spent on a CPU. ``--watchdog-ms N`` also
notes where the loop's thread was whenever a wake-up is N ms late (for diagnosis: the watchdog
takes the GIL itself, so measuring runs leave it off). The server calls ``gc.freeze()`` once its app
is built, as ``keyplane serve`` does; ``--no-gc-freeze`` leaves it out. Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from benchmarks.auth.compat import create_key, encode_master_key, new_master_key
from benchmarks.exchange.http_orders import HOST, LIMITS, _request, _run
from benchmarks.loadgen import free_port
from keyplane.keys.scopes import Restrictions
from keyplane.services import build_services
from keyplane.settings import Settings

PASSPHRASE = "a long and unguessable passphrase 42"


def _setup(tmp: str, master: str, n_keys: int) -> tuple[list[tuple[str, str]], str]:
    """Two trading accounts with funds and a key each, and an account holding ``n_keys`` more keys
    for the sweep to read, a fifth of them expiring 15 to 35 s from now."""
    settings = Settings(data_dir=Path(tmp), database_url=None, master_keys=master, redis_url=None)
    svc = build_services(settings)
    assert svc.exchange is not None
    keys = []
    for n in range(2):
        user = svc.accounts.create_user(f"stall{n}@example.com", PASSPHRASE)
        svc.exchange.wallet.credit(user.id, "USDT", "100000000")
        svc.exchange.wallet.credit(user.id, "BTC", "100000")
        issued = create_key(svc, user.id, scopes=("read", "trade"))
        keys.append((issued.info.api_key, issued.secret))
    holder = svc.accounts.create_user("keys@example.com", PASSPHRASE)
    now = dt.datetime.now(dt.UTC)
    for i in range(n_keys):
        expiry = now + dt.timedelta(seconds=15 + i % 20) if i % 5 == 0 else now + dt.timedelta(days=30)
        create_key(svc, holder.id, scopes=("read",), restrictions=Restrictions(expires_at=expiry))
    svc.close()
    return keys, "stall0@example.com"


def _cli_writes(env: dict[str, str], email: str, count: int, until: float, log: list[dict[str, Any]]) -> None:
    """Up to ``count`` operator CLI writes, one after the other, each in a process of its own."""
    commands = (["admin", "credit", email, "USDT", "1", "--json"], ["admin", "sweep", "--json"])
    for i in range(count):
        if time.time() > until:
            break
        cmd = commands[i % 2]
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "keyplane", *cmd], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        log.append({"cmd": cmd[1], "start": t0, "end": time.time(), "rc": proc.returncode,
                    "err": proc.stderr[-300:] if proc.returncode else ""})  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _window_max(samples: list[tuple[float, float]], spans: list[tuple[float, float]]) -> float | None:
    """The longest stall among wake-ups that came during one of ``spans`` (or just after it: a
    stall is recorded when the loop wakes)."""
    if not spans:
        return None
    got = [late for wall, late in samples if any(a <= wall <= b + 0.05 for a, b in spans)]
    return max(got) if got else 0.0


def one_round(args: argparse.Namespace, busy: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        master = encode_master_key(new_master_key())
        keys, email = _setup(tmp, master, args.keys)
        port = free_port()
        out_file = Path(tmp) / "stalls.json"
        env = {**os.environ, **LIMITS, "KEYPLANE_DATA_DIR": tmp, "KEYPLANE_PORT": str(port), "KEYPLANE_HOST": HOST,
               "KEYPLANE_MASTER_KEYS": master, "KEYPLANE_LOG_LEVEL": "warning"}  # fmt: skip
        server_env = {
            **env,
            "KP_STALL_OUT": str(out_file),
            "KP_STALL_SWEEP_S": str(args.sweep_every if busy else 3600),
            "KP_STALL_WATCHDOG_MS": str(args.watchdog_ms),
            "KP_STALL_GC_FREEZE": "0" if args.no_gc_freeze else "1",
            "KEYPLANE_LAST_USED_FLUSH_S": "1" if busy else "3600",
        }
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.exchange.stall_server"], env=server_env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        cli_log: list[dict[str, Any]] = []
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                raise SystemExit("the server did not start")

            def orders(series: str, n: int) -> list[Any]:
                reqs = []
                for i in range(n):
                    key, secret = keys[i % 2]
                    params = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                              "price": f"{10000 + (i % 5000) / 100:.2f}", "quantity": "0.001",
                              "newClientOrderId": f"stall-{series}-{i}"}  # fmt: skip
                    reqs.append(partial(_request, port, key, secret, params))
                return reqs

            asyncio.run(_run(port, orders("warmup", 500), args.connections, 30.0))
            load = orders("load", args.orders)
            t_start = time.time()
            cli = None
            if busy and args.cli_writes:
                # The last CLI write must start early enough to end within the load (~4 s each here).
                until = t_start + max(args.seconds - 5.0, 0.0)
                cli = threading.Thread(target=_cli_writes, args=(env, email, args.cli_writes, until, cli_log))
                cli.start()
            done, seconds, statuses = asyncio.run(_run(port, load, args.connections, args.seconds))
            t_end = time.time()
            if cli is not None:
                cli.join(90)
            # Counted, not fatal: a 503 here is the key cache failing closed (its poller late).
            refused = {str(k): v for k, v in statuses.items() if k != 200}
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
        if not out_file.exists():
            raise SystemExit(f"the server wrote no samples: {err.decode(errors='replace')[-2000:]}")
        doc = json.loads(out_file.read_text())

    cols = ("wall", "late", "cpu", "runq", "writer_cpu", "writer_runq")
    rows = [r for r in zip(*(doc[c] for c in cols), strict=True) if t_start <= r[0] <= t_end]
    samples = [(r[0], r[1]) for r in rows]
    lates = [r[1] for r in rows]
    # The part of each stall that neither the loop's thread nor the writer thread (which may hold
    # the GIL the loop waits for) spent runnable in the OS's run queue: on a shared machine, what
    # remains when the other processes' share is taken out (roughly: the two waits may overlap).
    own = [max(late - rq - wrq, 0.0) for _, late, _, rq, _, wrq in rows]
    worst = max(rows, key=lambda r: r[1])
    worst_own = max(rows, key=lambda r: r[1] - r[3] - r[5])
    polls = sorted(b for name, a, b, *_ in doc["events"] if name == "key_poll" and t_start - 3 <= b <= t_end)
    sweeps = [(a, b) for name, a, b, *_ in doc["events"] if name == "sweep" and a <= t_end and b >= t_start]
    flushes = [(a, b) for name, a, b, *_ in doc["events"] if name == "usage_flush" and a <= t_end and b >= t_start]
    clis = [(c["start"], c["end"]) for c in cli_log]
    gcs = [(a, b) for name, a, b, *_ in doc["events"] if name == "gc2" and a <= t_end and b >= t_start]
    ms = 1e3
    res: dict[str, Any] = {
        "mode": "busy" if busy else "quiet",
        "loop": doc["loop"],
        "orders": done,
        "orders_per_s": round(done / seconds, 1),
        "wakeups": len(lates),
        "max_stall_ms": round(max(lates) * ms, 2),
        "p99_stall_ms": round(_percentile(lates, 0.99) * ms, 2),
        "p999_stall_ms": round(_percentile(lates, 0.999) * ms, 2),
        "median_stall_ms": round(_percentile(lates, 0.5) * ms, 3),
        "over_5ms": sum(1 for x in lates if x > 0.005),
        "over_10ms": sum(1 for x in lates if x > 0.010),
        "refused": refused,
        "worst_on_cpu_ms": round(worst[2] * ms, 2),
        "worst_in_run_queue_ms": round(worst[3] * ms, 2),
        "worst_writer_in_run_queue_ms": round(worst[5] * ms, 2),
        "worst_less_run_queue_on_cpu_ms": round(worst_own[2] * ms, 2),
        "worst_less_run_queue_writer_on_cpu_ms": round(worst_own[4] * ms, 2),
        "max_loop_cpu_in_one_wakeup_ms": round(max(r[2] for r in rows) * ms, 2),
        "longest_key_poll_gap_ms": round(max((b - a for a, b in itertools.pairwise(polls)), default=0) * ms),
        "max_stall_less_run_queue_ms": round(max(own) * ms, 2),
        "p99_stall_less_run_queue_ms": round(_percentile(own, 0.99) * ms, 2),
        "p999_stall_less_run_queue_ms": round(_percentile(own, 0.999) * ms, 2),
        "over_5ms_less_run_queue": sum(1 for x in own if x > 0.005),
        "sweeps": len(sweeps),
        "sweep_ms_median": round(statistics.median(b - a for a, b in sweeps) * ms, 1) if sweeps else None,
        "usage_flushes": len(flushes),
        "cli_writes": len(clis),
        "gc2_collections": len(gcs),
        "gc2_ms_max": round(max((b - a for a, b in gcs), default=0) * ms, 1),
        "cli_failed": [c for c in cli_log if c["rc"]],
    }
    for name, spans in (("sweep", sweeps), ("usage_flush", flushes), ("cli", clis), ("gc2", gcs)):
        m = _window_max(samples, spans)
        res[f"max_stall_during_{name}_ms"] = None if m is None else round(m * ms, 2)
    if doc["captures"]:
        top = sorted(doc["captures"], key=lambda c: -c["gap_ms"])[:8]
        res["captures"] = [{"gap_ms": c["gap_ms"], "loop": c["loop"][-5:], "others": c["others"]} for c in top]
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="Load per round, at most.")
    ap.add_argument("--orders", type=int, default=30000, help="Load per round, at most.")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2, help="Rounds of each mode, the modes taking turns.")
    ap.add_argument("--modes", default="quiet,busy")
    ap.add_argument("--cli-writes", type=int, default=4, help="Per busy round (each process takes ~4 s here).")
    ap.add_argument("--sweep-every", type=float, default=2.0, help="Seconds between sweeps in busy rounds.")
    ap.add_argument("--keys", type=int, default=300, help="Keys for the sweep to read.")
    ap.add_argument("--watchdog-ms", type=float, default=0.0, help="Note the loop's stack when this late (0: off).")
    ap.add_argument("--no-gc-freeze", action="store_true", help="No gc.freeze() in the server (as before 2026-12-02).")
    args = ap.parse_args()
    modes = args.modes.split(",")
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            r = one_round(args, busy=mode == "busy")
            print(json.dumps({k: v for k, v in r.items() if k != "captures"}), file=sys.stderr, flush=True)
            rounds.append(r)
    out: dict[str, Any] = {}
    for mode in modes:
        rs = [r for r in rounds if r["mode"] == mode]
        summary: dict[str, Any] = {"rounds": len(rs)}
        for k, v in rs[0].items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                vals = [r[k] for r in rs if isinstance(r.get(k), int | float)]
                summary[k] = round(statistics.median(vals), 2)
        summary["max_stall_ms_all_rounds"] = max(r["max_stall_ms"] for r in rs)
        summary["loop"] = rs[0]["loop"]
        summary["cli_failed"] = [c for r in rs for c in r["cli_failed"]]
        summary["refused"] = [r["refused"] for r in rs]
        caps = [c for r in rs for c in r.get("captures", [])]
        if caps:
            summary["captures"] = sorted(caps, key=lambda c: -c["gap_ms"])[:8]
        out[mode] = summary
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
