"""``keyplane tax report`` from end to end: the ledger file in, ``gains.csv`` and its summary out.

A ledger in scaled integers (``scaled.py``; the usual case) runs through the integer engine. A
large one is split by asset: each asset's pool depends only on the trades, fees and transfers of
that asset, in order, and on the prices of the other assets (for a fee in a third asset or a
crypto-to-crypto trade).

- When no event reads a price (``Ledger.only_usual_trades``: only trades against the report
  currency with their fees in their base or that currency, the common case), every asset, or group
  of assets, gets a forked process of its own, which reads only that asset's trades from the
  ledger, runs its pool and formats its CSV lines (``_workers``). With more processes than cores,
  the system keeps every core busy to the end even when the assets are of unequal size.
- Otherwise this process reads the whole ledger, and a forked process runs the pools of about half
  of the assets, and this one the others; both follow every trade's prices (``_parallel``).

Either way this process merges the lines in the order one engine would have written them (every
disposal carries the place of its event, or its key of time and storing order): the result is byte
for byte the single-process one.

A ledger with an amount of more than ``scaled.SCALE`` decimals runs through the ``Decimal``
engine (``engine.py``), in one process.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection, wait
from operator import itemgetter
from pathlib import Path
from typing import Any

from keyplane.apps.tax import report, scaled
from keyplane.apps.tax.engine import Result, TaxError, compute, paused_gc
from keyplane.apps.tax.ledger import Ledger, NotScaled

PARALLEL_EVENTS = 200_000  # from this many trades and transfers, two processes share the work
WORKERS = 8  # at most this many processes for a ledger in which no event reads a price


@dataclass
class Report:
    """What ``make`` wrote: ``rows`` disposal rows, and the summary (also in ``summary_path``)."""

    method: str
    quote: str
    rows: int
    summary_path: Path
    summary: list[report.AssetSummary]
    warnings: list[str] = field(default_factory=list)
    holdings: dict[str, Decimal] = field(default_factory=dict)


@dataclass
class _Part:
    """One process's share of a scaled report, with the keys that order its lines and warnings."""

    lines: list[str]
    line_keys: list[int]
    sums: dict[str, list[int]]
    warnings: list[str]
    warning_keys: list[int]
    holdings: dict[str, int]


def make(
    ledger_path: Path,
    out: Path,
    *,
    method: str = "fifo",
    quote: str = "USDT",
    long_term_days: int = 365,
    year: int | None = None,
    parallel_events: int = PARALLEL_EVENTS,
) -> Report:
    """Compute the realised gains of the ledger at ``ledger_path`` and write ``out`` and its summary.

    Raises ``TaxError`` for an unknown method, ``OSError`` if a file cannot be written."""
    quote = quote.upper()
    with paused_gc():
        with Ledger(ledger_path) as ledger:
            plan = _own_plan(ledger, quote, parallel_events)
            if plan is None:
                try:
                    trades, transfers = ledger.scaled_trades(), ledger.scaled_transfers()
                    own_only = ledger.only_usual_trades(quote)
                except NotScaled:
                    result = compute(
                        ledger.trades(), ledger.transfers(), method=method, quote=quote, long_term_days=long_term_days
                    )
                    rows = report.in_year(result.disposals, year)
                    spath, summary = report.write(out, rows)
                    return Report(method, result.quote, len(rows), spath, summary, result.warnings, result.holdings)
        if plan is not None:  # each asset group read, run and formatted in a process of its own
            scaled.ScaledEngine(method, quote, long_term_days)  # raises TaxError for an unknown method, before any fork
            part = _workers(ledger_path, plan, method, quote, long_term_days, year)
        else:
            ordered, pairs = scaled.events(trades, transfers)
            groups = _split(trades, transfers, quote) if len(ordered) >= parallel_events else None
            # This split hands the events to the second process through the fork itself: it needs a
            # process that may fork (see _single_threaded).
            if groups is None or not _can_fork() or not _single_threaded():
                part = _part(ordered, pairs, method, quote, long_term_days, year, None)
            else:
                part = _parallel(ordered, pairs, method, quote, long_term_days, year, groups, own_only)
            del ordered, pairs, trades, transfers
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            csv.writer(f).writerow(report.COLUMNS)
            f.write("".join(part.lines))
        summary = report.summaries(part.sums, scaled.SCALE)
        spath = report.write_summary(out, summary)
        holdings = {a: scaled.to_decimal(v) for a, v in part.holdings.items()}
        return Report(method, quote, len(part.lines), spath, summary, part.warnings, holdings)


@dataclass
class _Plan:
    """How ``_workers`` splits a ledger in which no event reads a price: the groups of base assets,
    one process each, and the key that orders the trades (``Ledger.order_key``)."""

    groups: list[tuple[str, ...]]
    first: int
    step: int


def _own_plan(ledger: Ledger, quote: str, parallel_events: int) -> _Plan | None:
    """A ``_Plan`` if the ledger is large, all in integers and ``only_usual_trades``, and this
    system can fork; else None (the ledger is then read here, in one piece)."""
    if not _can_fork() or ledger.trade_count() < parallel_events or not ledger.all_integers():
        return None
    if not ledger.only_usual_trades(quote):
        return None
    key = ledger.order_key()
    bases = ledger.bases()
    if key is None or len(bases) < 2:
        return None
    if len(bases) <= WORKERS:
        groups: list[tuple[str, ...]] = [(b,) for b in bases]
    else:  # the largest first, each to the group with the fewest trades so far
        counts = ledger.base_counts()
        bins: list[list[str]] = [[] for _ in range(WORKERS)]
        loads = [0] * WORKERS
        for asset, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            i = loads.index(min(loads))
            bins[i].append(asset)
            loads[i] += n
        groups = [tuple(b) for b in bins if b]
    return _Plan(groups, *key)


def _workers(ledger_path: Path, plan: _Plan, method: str, quote: str, long_term_days: int, year: int | None) -> _Part:
    """Run every group of ``plan`` in a forked process of its own, which reads that group's trades
    from the ledger, runs their pools and formats their lines; merge the parts in the ledger's
    order. There are more groups than cores as a rule: the system shares the cores between them,
    so that unequal groups (five assets over two cores) still keep both cores busy to the end."""
    ctx = _context()
    receivers: list[Connection] = []
    children = []
    parts: dict[int, _Part | BaseException] = {}
    try:
        for group in plan.groups:
            receive, send = ctx.Pipe(duplex=False)
            receivers.append(receive)
            child = ctx.Process(
                target=_own_child,
                args=(send, ledger_path, group, plan.first, plan.step, method, quote, long_term_days, year),
                daemon=True,
            )
            child.start()
            children.append(child)
            send.close()
        waiting = dict(enumerate(receivers))
        ready: list[Any] = wait(receivers)
        while waiting:  # receive each part as soon as it is ready: a process waits until it is sent
            for i, receive in list(waiting.items()):
                if receive not in ready:
                    continue
                try:
                    parts[i] = receive.recv()
                except EOFError:
                    parts[i] = OSError(f"a report process ended without a result (exit code {children[i].exitcode})")
                del waiting[i]
            ready = wait(list(waiting.values())) if waiting else []
    finally:
        for receive in receivers:
            receive.close()
        for child in children:
            child.join()
    done: list[_Part] = []
    for i in range(len(plan.groups)):
        part = parts[i]
        if isinstance(part, BaseException):
            raise part
        done.append(part)
    return _merge(done)


def _own_child(
    send: Connection,
    ledger_path: Path,
    assets: tuple[str, ...],
    first: int,
    step: int,
    method: str,
    quote: str,
    long_term_days: int,
    year: int | None,
) -> None:
    try:
        with Ledger(ledger_path) as ledger:
            trades = [(a, ledger.own_trades(a, first, step)) for a in assets]
        engine = scaled.ScaledEngine(method, quote, long_term_days)
        engine.mine, engine.lead = frozenset(assets), False  # no warning here belongs to no pool
        part: _Part | BaseException = _finish(engine, scaled.run_own(engine, trades), year)
    except (TaxError, OSError, ValueError, ArithmeticError, sqlite3.Error) as e:
        part = e
    send.send(part)
    send.close()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1


def _single_threaded() -> bool:
    """A fork copies every lock as it is, held or not, but only the forking thread: a lock another
    thread holds at that moment (SQLite's global mutex, a logging handler's) stays held forever in
    the child. Forking is safe only when this process runs one thread (``keyplane tax report``)."""
    return threading.active_count() == 1


def _context() -> multiprocessing.context.ForkContext | multiprocessing.context.ForkServerContext:
    """``fork`` when this process runs one thread: nothing to start, import or pickle. Otherwise
    ``forkserver``: the children fork from a clean single-threaded server process."""
    if _single_threaded():
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _split(trades: list[scaled.Row], transfers: list[scaled.TransferRow], quote: str) -> list[frozenset[str]] | None:
    """Two sets of assets with about as many trades each, or None if there is only one asset."""
    weight: Counter[str] = Counter(map(itemgetter(3), trades))  # base
    weight.update(map(itemgetter(4), trades))  # quote: the report currency, or a crypto-to-crypto trade
    weight.update(a for a in map(itemgetter(9), trades) if a is not None)  # fee asset
    weight.update(t.asset for t in transfers)
    weight.pop(quote, None)
    if len(weight) < 2:
        return None
    bins: list[set[str]] = [set(), set()]
    loads = [0, 0]
    for asset, n in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0])):
        i = 0 if loads[0] <= loads[1] else 1
        bins[i].add(asset)
        loads[i] += n
    return [frozenset(b) for b in bins]


def _parallel(
    ordered: list[scaled.Event],
    pairs: scaled.Pairs,
    method: str,
    quote: str,
    long_term_days: int,
    year: int | None,
    groups: list[frozenset[str]],
    own_only: bool,
) -> _Part:
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_child,
        args=(send, ordered, pairs, method, quote, long_term_days, year, groups[1], own_only),
        daemon=True,
    )
    child.start()
    send.close()
    try:
        mine = _part(ordered, pairs, method, quote, long_term_days, year, groups[0], own_only=own_only)
        try:
            theirs: _Part | BaseException = receive.recv()
        except EOFError:
            theirs = OSError(f"the second report process ended without a result (exit code {child.exitcode})")
    finally:
        receive.close()
        child.join()
    if isinstance(theirs, BaseException):
        raise theirs
    return _merge([mine, theirs])


def _child(
    send: Connection,
    ordered: list[scaled.Event],
    pairs: scaled.Pairs,
    method: str,
    quote: str,
    long_term_days: int,
    year: int | None,
    mine: frozenset[str],
    own_only: bool,
) -> None:
    try:
        part: _Part | BaseException = _part(
            ordered, pairs, method, quote, long_term_days, year, mine, lead=False, own_only=own_only
        )
    except (TaxError, OSError, ValueError, ArithmeticError) as e:
        part = e
    send.send(part)
    send.close()


def _part(
    ordered: list[scaled.Event],
    pairs: scaled.Pairs,
    method: str,
    quote: str,
    long_term_days: int,
    year: int | None,
    mine: frozenset[str] | None,
    *,
    lead: bool = True,
    own_only: bool = False,
) -> _Part:
    """Run the pools of the assets in ``mine`` (all if None) and format their lines. With
    ``own_only`` (``Ledger.only_usual_trades``), only the trades in those assets are walked."""
    engine = scaled.ScaledEngine(method, quote, long_term_days)
    engine.mine, engine.lead = mine, lead
    if own_only and mine is not None:
        places = [i for i, t in enumerate(ordered) if t[3] in mine]  # the base of a (usual) trade
        result = scaled.run(engine, list(map(ordered.__getitem__, places)), pairs, places)
    else:
        result = scaled.run(engine, ordered, pairs)
    return _finish(engine, result, year)


def _finish(engine: scaled.ScaledEngine, result: Result, year: int | None) -> _Part:
    """The part of a run engine: its lines (within ``year``), sums, warnings and holdings."""
    disposals, keys = result.disposals, engine.disposal_keys
    if year is not None:
        kept = set(map(id, report.in_year(disposals, year)))
        keys = [k for k, d in zip(keys, disposals, strict=True) if id(d) in kept]
        disposals = [d for d in disposals if id(d) in kept]
    return _Part(
        _lines(disposals),
        keys,
        report.sums(disposals),
        result.warnings,
        engine.warning_keys,
        result.holdings,  # type: ignore[arg-type]  # scaled ints
    )


def _lines(disposals: list[Any]) -> list[str]:
    """The CSV lines of ``disposals`` (scaled), each quoted by ``csv`` where a name needs it."""
    out = report.scaled_lines(disposals)
    separators = len(report.COLUMNS) - 1
    whole = "".join(out)  # every line has at least its separators: if the totals match, all are plain
    n = len(out)
    if whole.count(",") == separators * n and '"' not in whole and whole.count("\n") == whole.count("\r") == n:
        return out
    for i, text in enumerate(out):
        if text.count(",") != separators or '"' in text or text.count("\n") != 1 or text.count("\r") != 1:
            buf = io.StringIO()
            csv.writer(buf).writerow(report.row_scaled(disposals[i]))
            out[i] = buf.getvalue()
    return out


def _merged(items: list[list[Any]], keys: list[list[int]]) -> list[Any]:
    """The items of every list (each in key order) in key order; earlier lists first on equal keys."""
    every_key = [k for ks in keys for k in ks]
    every_item = [x for xs in items for x in xs]
    order = sorted(range(len(every_key)), key=every_key.__getitem__)  # stable; sorted runs: merges only
    return list(map(every_item.__getitem__, order))


def _merge(parts: list[_Part]) -> _Part:
    """One part of several, each with its own assets (so the sums and holdings do not overlap)."""
    sums: dict[str, list[int]] = {}
    holdings: dict[str, int] = {}
    for p in parts:
        sums |= p.sums
        holdings |= p.holdings
    return _Part(
        _merged([p.lines for p in parts], [p.line_keys for p in parts]),
        [],
        sums,
        _merged([p.warnings for p in parts], [p.warning_keys for p in parts]),
        [],
        holdings,
    )
