"""A FIFO tax report over synthetic trades, end to end.

    python -m benchmarks.tax.fifo [--trades 1000000] [--assets 5] [--method fifo] [--one-process]

Builds a ledger of N trades (buys and sells of several assets against USDT, a quarter of them with
a fee in the base asset, a quarter in USDT and, with ``--assets 8``, some in BNB), stores it in a
SQLite ledger file, then times what ``keyplane tax report`` does (``reporter.make``): from opening
the ledger file to having ``gains.csv`` and its summary written. The CPU time includes that of
every process the report forks (one per asset). ``--one-process``
keeps the report in one process. Prints JSON, with the load average before and after the report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from keyplane.apps.tax import reporter
from keyplane.apps.tax.ledger import Ledger
from keyplane.apps.tax.model import Trade

ASSETS = ["BTC", "ETH", "SOL", "ADA", "DOT", "LINK", "AVAX", "BNB"]


def synthetic(n: int, n_assets: int, seed: int = 1) -> list[Trade]:
    rng = random.Random(seed)
    assets = ASSETS[: max(1, n_assets)]
    held = dict.fromkeys(assets, Decimal(0))
    price = {a: Decimal(rng.randint(5, 60000)) for a in assets}
    ts = 1_672_531_200_000  # 2023-01-01
    out = []
    for i in range(n):
        ts += rng.randint(1, 120_000)
        asset = rng.choice(assets)
        price[asset] = max(Decimal("0.01"), price[asset] * Decimal(1000 + rng.randint(-20, 20)) / 1000).quantize(
            Decimal("0.01")
        )
        amount = Decimal(rng.randint(1, 100_000)) / 10_000
        side = "buy" if held[asset] < amount or rng.random() < 0.5 else "sell"
        held[asset] += amount if side == "buy" else -amount
        cost = (amount * price[asset]).quantize(Decimal("0.01"))
        r = rng.random()
        if r < 0.25:
            fee, fee_asset = (amount / 1000).quantize(Decimal("1e-8")), asset
        elif r < 0.5:
            fee, fee_asset = (cost / 1000).quantize(Decimal("0.01")), "USDT"
        elif r < 0.55 and asset != "BNB" and "BNB" in assets and held["BNB"] > 1:
            fee, fee_asset = Decimal("0.001"), "BNB"
            held["BNB"] -= fee
        else:
            fee, fee_asset = Decimal(0), None
        if side == "buy" and fee_asset == asset:
            held[asset] -= fee
        if side == "sell" and fee_asset == asset:
            held[asset] -= fee
        out.append(Trade("bench", str(i), ts, asset, "USDT", side, amount, cost, fee, fee_asset))
    return out


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (the report's other processes, all joined
    before ``reporter.make`` returns), which ``time.process_time`` leaves out."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--assets", type=int, default=5)
    p.add_argument("--method", default="fifo")
    p.add_argument("--one-process", action="store_true", help="Keep the report in one process.")
    p.add_argument("--ledger", type=Path, help="Build the ledger here, or reuse it if it exists (to compare runs).")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.ledger or Path(tmp) / "ledger.sqlite"
        t0 = time.perf_counter()
        if not path.exists():
            trades = synthetic(args.trades, args.assets)
            with Ledger(path) as lg:
                lg.add_trades(trades)
            del trades
        build = time.perf_counter() - t0

        # What ``keyplane tax report`` does: the ledger file in, gains.csv and its summary out.
        # The CPU time counts the other processes' too (``process_time`` leaves them out).
        load_before = os.getloadavg()[0]
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        parallel = 2**62 if args.one_process else reporter.PARALLEL_EVENTS
        done = reporter.make(path, Path(tmp) / "gains.csv", method=args.method, parallel_events=parallel)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - k0
        load_after = os.getloadavg()[0]

    print(
        json.dumps(
            {
                "trades": args.trades,
                "method": args.method,
                "processes": "one" if args.one_process else "split by asset",
                "disposal_rows": done.rows,
                "build_ledger_s": round(build, 2),
                "report_total_s": round(total, 2),
                "report_cpu_s": round(cpu, 2),
                "total_gain": str(done.summary[-1].total_gain),
                "load_average_1min": f"{load_before:.2f} -> {load_after:.2f}",
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
