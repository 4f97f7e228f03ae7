"""Matching throughput in-process, and how an order's cost grows with book depth.

    python -m benchmarks.exchange.inprocess [--orders 2000 --depths 1000,10000,100000 --database-url URL]

Calls ``OrderService.place`` directly (no HTTP) on a fresh database: SQLite in a temp dir, or the
PostgreSQL database given. For each depth, the book is first filled with that many resting bids
(through the service, so balances and ledger stay consistent), then three bounded series run:

- ``rest``: a limit bid that rests inside the book (insert into the index);
- ``cross``: a limit ask that takes the best bid (one fill: trade, fills, maker update, ledger);
- ``sweep``: a market sell that takes the 10 best bids (ten fills in one transaction); each round
  puts the ten levels back with resting bids, whose cost (the ``rest`` median) is subtracted;
- ``rest_batch``: the ``rest`` order, placed 16 at a time with ``OrderService.place_batch`` (group
  commit: one transaction, one SAVEPOINT per order), as ``keyplane serve`` does on SQLite.

Prints JSON: microseconds per order (median of 3 rounds) per series and depth, of wall time, and
for ``rest`` and ``rest_batch`` also of the thread's CPU time (``*_cpu_us_per_order``), which a
shared machine's other processes and the disk move much less.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.auth.compat import encode_master_key, new_master_key
from keyplane.exchange.orders import Placement
from keyplane.exchange.params import parse_new_order
from keyplane.services import build_services
from keyplane.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--depths", default="1000,10000,100000")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="per depth, for filling and measuring")
    args = ap.parse_args()
    out: dict[str, object] = {"backend": "postgresql" if args.database_url else "sqlite", "orders": args.orders}
    for depth in [int(d) for d in args.depths.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), database_url=args.database_url,
                                master_keys=encode_master_key(new_master_key()), redis_url=None)  # fmt: skip
            svc = build_services(settings)
            ex = svc.exchange
            assert ex is not None
            m = ex.markets
            tag = f"{time.time_ns()}"
            maker = svc.accounts.create_user(f"maker{tag}@example.com", "a long and unguessable passphrase 42").id
            taker = svc.accounts.create_user(f"taker{tag}@example.com", "a long and unguessable passphrase 42").id
            for uid in (maker, taker):
                ex.wallet.credit(uid, "USDT", "1000000000")
                ex.wallet.credit(uid, "BTC", "1000000")

            def new(uid: int, side: str, otype: str, price: str | None, qty: str, m: Any = m) -> Placement:
                p = {"symbol": "BTCUSDT", "side": side, "type": otype, "quantity": qty}
                if price is not None:
                    p.update(price=price, timeInForce="GTC")
                return Placement(uid, parse_new_order(p, m))

            def order(uid: int, side: str, otype: str, price: str | None, qty: str, ex: Any = ex) -> None:
                req = new(uid, side, otype, price, qty)
                ex.orders.place(req.user_id, req.order)

            deadline = time.monotonic() + args.max_seconds
            t0 = time.perf_counter()
            for i in range(depth):  # bids from 10000.00 down, one cent apart
                order(maker, "BUY", "LIMIT", f"{10000 - (i % 900000) / 100:.2f}", "0.001")
                if time.monotonic() > deadline:
                    raise SystemExit(f"filling {depth} orders took over {args.max_seconds}s")
            fill_s = time.perf_counter() - t0
            series: dict[str, list[float]] = {"rest": [], "cross": [], "sweep": [], "rest_batch": []}
            cpu: dict[str, list[float]] = {"rest": [], "rest_batch": []}  # the thread's CPU time
            for _ in range(3):
                for name, values in series.items():
                    n = args.orders if name != "sweep" else max(args.orders // 10, 10)
                    start, cpu0 = time.perf_counter(), time.thread_time()
                    if name == "rest_batch":
                        for b in range(0, n, 16):
                            reqs = [new(maker, "BUY", "LIMIT", f"{5000 + (i % 1000) / 100:.2f}", "0.001")
                                    for i in range(b, min(b + 16, n))]  # fmt: skip
                            ex.orders.place_batch(reqs)
                    for i in range(n if name != "rest_batch" else 0):
                        if name == "rest":
                            order(maker, "BUY", "LIMIT", f"{5000 + (i % 1000) / 100:.2f}", "0.001")
                        elif name == "cross":
                            order(taker, "SELL", "LIMIT", "9000.00", "0.001")
                            order(maker, "BUY", "LIMIT", "10000.00", "0.001")  # put the level back
                        else:
                            order(taker, "SELL", "MARKET", None, "0.01")
                            for _k in range(10):
                                order(maker, "BUY", "LIMIT", "10000.00", "0.001")
                    per = (time.perf_counter() - start) / n
                    if name in cpu:
                        cpu[name].append((time.thread_time() - cpu0) / n * 1e6)
                    if name == "cross":
                        per /= 2  # the refill is a resting order, measured in "rest"
                    elif name == "sweep":  # minus the ten refills, at the rest series' cost
                        per -= 10 * statistics.median(series["rest"]) / 1e6
                    values.append(per * 1e6)
            out[f"depth_{depth}"] = {
                "fill_orders_per_s": round(depth / fill_s, 1),
                **{f"{k}_us_per_order": round(statistics.median(v), 1) for k, v in series.items()},
                **{f"{k}_cpu_us_per_order": round(statistics.median(v), 1) for k, v in cpu.items()},
                "rest_orders_per_s": round(1e6 / statistics.median(series["rest"]), 1),
            }
            svc.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
