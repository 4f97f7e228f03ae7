"""``keyplane tax report`` from end to end: the ledger file in, ``gains.csv`` and its summary out.

One engine (``engine.py``), over integers at one scale (``figures.py``), split by asset:

1. A few cheap reads: the report's scale, the key that orders the events, the assets, and the
   transfers (which are matched in pairs between the user's own accounts).
2. The first pass for prices (``prices.resolve``), only when some event needs one: it walks every
   event in order and keeps the values of those that read another asset's price. Values never
   depend on the pools, so with them each asset's pool needs only its own events.
3. The assets are shared out in groups (one per asset, up to ``WORKERS``; beyond that, balanced by
   their numbers of events), and each group gets a forked process, which reads only its events
   from the ledger, runs their pools, formats its CSV lines and writes them into the file, each
   where the ledger's order puts it (``_workers``). With more processes than cores the system
   keeps every core busy to the end even when the assets are of unequal size. A small ledger, or a
   system that cannot fork, runs as one group in this process.

The first pass runs when the indexes show a trade between two assets other than the report
currency, a fee in a third asset of unknown value, or a deposit. A rarer event that needs a price
(a fee paid on nothing) is found on the way: the process that meets it stops, and so do the
others; the report then runs the first pass and starts again.

Every disposal and warning carries its event's key, so the lines are in the order one engine
gives: the file is byte for byte the one-process one. It is written beside its final name and
takes that name once complete, so a report that fails leaves the previous file as it was.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sqlite3
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from keyplane.apps.tax import report
from keyplane.apps.tax.engine import (
    Disposal,
    Engine,
    Pairs,
    TaxError,
    check_method,
    match_transfers,
    merged,
    paused_gc,
    run,
)
from keyplane.apps.tax.figures import to_decimal
from keyplane.apps.tax.ledger import Ledger, Order
from keyplane.apps.tax.prices import NeedsPrices, Resolved, TransferRow, resolve

PARALLEL_EVENTS = 200_000  # from this many events, the groups of assets run in processes of their own
WORKERS = 8  # at most this many processes
_SLICE = 10_000  # disposals formatted at a time


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
class _Job:
    """What every group of a report shares."""

    ledger_path: Path
    method: str
    quote: str
    long_term_days: int
    year: int | None
    scale: int
    wide: bool
    order: Order
    pairs: Pairs
    resolved: Resolved | None


@dataclass
class _Tally:
    """What a group adds up besides its lines: their number, the sums per asset, the warnings
    (with their keys) and the holdings."""

    rows: int
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

    Raises ``TaxError`` for an unknown method or an amount no report counts, ``OSError`` if a file
    cannot be written."""
    quote = quote.upper()
    check_method(method)
    with paused_gc():
        with Ledger(ledger_path) as ledger:
            scale, wide = ledger.scale()
            order = ledger.order()
            if order is None:  # nothing in the ledger
                with report.replacing(out) as tmp:
                    tally = _written(tmp, [], _Tally(0, {}, [], [], {}))
                return _finished(out, method, quote, scale, tally)
            groups = _groups(ledger, quote, parallel_events)
            reads_prices = ledger.reads_prices(quote)
            transfers = ledger.rows(order, scale, wide, trades=False)
        pairs = match_transfers(t for t in transfers if type(t) is TransferRow)
        job = _Job(ledger_path, method, quote, long_term_days, year, scale, wide, order, pairs, None)
        matched = set(pairs.values())
        if reads_prices or any(t.kind == "deposit" and t.key not in matched for t in transfers):  # type: ignore[union-attr]
            job.resolved = _resolve(job, matched)  # the first pass, before the pools
        with report.replacing(out) as tmp:
            try:
                tally = _report(job, groups, tmp)
            except NeedsPrices:  # an event reads another asset's price: the first pass, and again
                job.resolved = _resolve(job, matched)
                tally = _report(job, groups, tmp)
        return _finished(out, method, quote, scale, tally)


def _resolve(job: _Job, matched: set[int]) -> Resolved:
    with Ledger(job.ledger_path) as ledger:
        events = ledger.rows(job.order, job.scale, job.wide)
    return resolve(events, job.quote, matched)


def _report(job: _Job, groups: list[frozenset[str]] | None, out: Path) -> _Tally:
    """Run every group and write their lines into ``out``; returns the report's tally, with the
    first pass's warnings merged in."""
    if groups is None:
        disposals, _keys, tally = _group(job, None)
        tally = _written(out, report.lines(disposals, job.scale), tally)
    else:
        tally = _workers(job, groups, out)
    if job.resolved is not None:
        found = job.resolved
        tally.warnings = merged([found.warnings, tally.warnings], [found.warning_keys, tally.warning_keys])
    return tally


def _group(job: _Job, assets: frozenset[str] | None) -> tuple[list[Disposal], list[int], _Tally]:
    """The disposals of the assets (all if None) within the year, their keys and their tally."""
    with Ledger(job.ledger_path) as ledger:
        events = ledger.rows(job.order, job.scale, job.wide, assets)
    engine = Engine(job.method, job.quote, job.long_term_days, job.scale, job.resolved, assets)
    result = run(engine, events, job.pairs)
    del events
    disposals, keys = result.disposals, result.disposal_keys
    if job.year is not None:
        kept = set(map(id, report.in_year(disposals, job.year)))
        keys = [k for k, d in zip(keys, disposals, strict=True) if id(d) in kept]
        disposals = [d for d in disposals if id(d) in kept]
    tally = _Tally(len(disposals), report.sums(disposals), result.warnings, result.warning_keys, result.holdings)
    return disposals, keys, tally


def _written(out: Path, lines: list[str], tally: _Tally) -> _Tally:
    """Write the lines of one group (in key order) into ``out``, after the header."""
    with out.open("w", newline="") as f:
        f.write(report.header())
        f.write("".join(lines))
    return tally


def _finished(out: Path, method: str, quote: str, scale: int, tally: _Tally) -> Report:
    """The ``Report`` of a run whose lines are in ``out``: writes the summary beside it."""
    summary = report.summaries(tally.sums, scale)
    spath = report.write_summary(out, summary)
    holdings = {a: to_decimal(v, scale) for a, v in sorted(tally.holdings.items())}
    return Report(method, quote, tally.rows, spath, summary, tally.warnings, holdings)


def _groups(ledger: Ledger, quote: str, parallel_events: int) -> list[frozenset[str]] | None:
    """The groups of assets, one process each; None: one group, in this process."""
    if ledger.size() < parallel_events or not _can_fork():
        return None
    assets = ledger.assets(quote)
    if len(assets) < 2:
        return None
    if len(assets) <= WORKERS:
        return [frozenset([a]) for a in sorted(assets)]
    bins: list[set[str]] = [set() for _ in range(WORKERS)]  # the largest first, each to the lightest bin
    loads = [0] * WORKERS
    for asset, n in sorted(ledger.assets(quote, weighed=True).items(), key=lambda kv: (-kv[1], kv[0])):
        i = loads.index(min(loads))
        bins[i].add(asset)
        loads[i] += n
    return [frozenset(b) for b in bins if b]


def _workers(job: _Job, groups: list[frozenset[str]], out: Path) -> _Tally:
    """Run every group in a forked process of its own, which reads that group's events from the
    ledger, runs their pools, formats their lines and writes them into ``out``, each where the
    ledger's order puts it. Raises what a process raised (``NeedsPrices`` among others).

    Each process sends three things, and this one answers once: the keys of its lines, as soon as
    its pools have run (this process sorts all of them while the lines are being formatted); then
    the length of each line and its tally; this process then knows where every line goes, sends
    each process its lines' places, writes the header and sizes the file; each process then writes
    its lines there and says so. Only keys, lengths and places go through the pipes, never the
    lines, and the writing is spread over the processes too."""
    ctx = _context()
    conns: list[Connection] = []
    children: list[BaseProcess] = []
    done = False
    try:
        for group in groups:
            mine, theirs = ctx.Pipe()
            child: BaseProcess = ctx.Process(target=_child, args=(theirs, job, group, out), daemon=True)
            child.start()
            children.append(child)
            theirs.close()
            conns.append(mine)
        keys: list[list[int]] = _gather(conns, children)
        every_key = [k for ks in keys for k in ks]
        order = sorted(range(len(every_key)), key=every_key.__getitem__)  # stable: a group's own order on ties
        del every_key, keys
        rank = [0] * len(order)  # each line's place in the file's order
        for place, i in enumerate(order):
            rank[i] = place
        sent: list[tuple[list[int], _Tally]] = _gather(conns, children)  # each line's length, in bytes
        tallies = [tally for _, tally in sent]
        lengths = [n for each, _ in sent for n in each]
        head = report.header().encode()
        starts = list(accumulate(map(lengths.__getitem__, order), initial=len(head)))
        with out.open("wb") as f:
            f.write(head)
            f.truncate(starts[-1])
        where = list(map(starts.__getitem__, rank))
        k = 0
        for conn, tally in zip(conns, tallies, strict=True):
            conn.send(where[k : k + tally.rows])
            k += tally.rows
        _gather(conns, children)  # each has written its lines
        done = True
    finally:
        for conn in conns:
            conn.close()
        for child in children:
            if not done:  # a process failed, or met an event that needs a price: the others stop now
                child.terminate()
            child.join()
    sums: dict[str, list[int]] = {}
    holdings: dict[str, int] = {}
    for t in tallies:
        sums |= t.sums
        holdings |= t.holdings
    warnings = merged([t.warnings for t in tallies], [t.warning_keys for t in tallies])
    every = [k for t in tallies for k in t.warning_keys]
    return _Tally(len(lengths), sums, warnings, sorted(every), holdings)


def _gather(conns: list[Connection], children: list[BaseProcess]) -> list[Any]:
    """The next message of every process, in their order, each received as soon as it is ready
    (a process waits until its message is taken); raises the error a process sent instead."""
    got: dict[int, Any] = {}
    waiting = dict(enumerate(conns))
    while waiting:
        ready = wait(list(waiting.values()))
        for i, conn in list(waiting.items()):
            if conn not in ready:
                continue
            try:
                got[i] = conn.recv()
            except EOFError:
                got[i] = OSError(f"a report process ended early (exit code {children[i].exitcode})")
            del waiting[i]
            if isinstance(got[i], BaseException):
                raise got[i]
    return [got[i] for i in range(len(conns))]


def _child(conn: Connection, job: _Job, assets: frozenset[str], out: Path) -> None:
    """One process of ``_workers``: its assets' events read, run, formatted and written."""
    try:
        disposals, keys, tally = _group(job, assets)
        conn.send(keys)
        lines: list[bytes] = []
        for start in range(0, len(disposals), _SLICE):  # a slice at a time: its garbage is reused by the next
            lines += map(str.encode, report.lines(disposals[start : start + _SLICE], job.scale))
        conn.send((list(map(len, lines)), tally))
        places: list[int] = conn.recv()
        if lines:
            with out.open("r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
                for place, text in zip(places, lines, strict=True):
                    mapped[place : place + len(text)] = text
        conn.send(None)
    except (BrokenPipeError, EOFError):  # the report stopped: nothing to send or write
        pass
    except (NeedsPrices, TaxError, OSError, ValueError, ArithmeticError, sqlite3.Error) as e:
        with suppress(BrokenPipeError):
            conn.send(e)
    finally:
        conn.close()


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1


def _context() -> multiprocessing.context.ForkContext | multiprocessing.context.ForkServerContext:
    """``fork`` when this process runs one thread: nothing to start, import or pickle. A fork copies
    every lock as it is but only the forking thread, so a lock another thread holds (SQLite's, a
    logging handler's) would stay held forever in the child: then ``forkserver``, whose children
    fork from a clean single-threaded server process."""
    if threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx
