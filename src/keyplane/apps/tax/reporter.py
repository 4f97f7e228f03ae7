"""``keyplane tax report`` from end to end: the ledger file in, ``gains.csv`` and its summary out.

A ledger in scaled integers (``scaled.py``; the usual case) runs through the integer engine. A
large one is split by asset: each asset's pool depends only on the trades, fees and transfers of
that asset, in order, and on the prices of the other assets (for a fee in a third asset or a
crypto-to-crypto trade).

- When no event reads a price (``Ledger.only_usual_trades``: no transfers, and only trades against
  the report currency with their fees in their base or that currency, the common case), every
  asset, or group of assets, gets a forked process of its own, which reads only that asset's trades
  from the ledger, runs its pool, formats its CSV lines and writes them into the file, each where
  the ledger's order puts it (``_workers``). With more processes than cores, the system keeps every
  core busy to the end even when the assets are of unequal size. The processes check their trades
  as they read them: if one finds a trade that reads a price, they all stop, and the report goes on
  as below.
- Otherwise this process reads the whole ledger, and a forked process runs the pools of about half
  of the assets, and this one the others; both follow every trade's prices (``_parallel``); this
  process merges their lines.

Either way the lines are in the order one engine would have written them (every disposal carries
the place of its event, or its key of time and storing order): the file is byte for byte the
single-process one. It is written beside its final name and takes that name once complete, so a
report that fails leaves the previous file as it was.

A ledger with an amount of more than ``scaled.SCALE`` decimals runs through the ``Decimal``
engine (``engine.py``), in one process.
"""

from __future__ import annotations

import csv
import io
import mmap
import multiprocessing
import os
import sqlite3
import threading
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate, chain
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any

from keyplane.apps.tax import report, scaled
from keyplane.apps.tax.engine import Result, TaxError, compute, paused_gc
from keyplane.apps.tax.ledger import Ledger, NotScaled

PARALLEL_EVENTS = 200_000  # from this many trades and transfers, two processes share the work
_QUOTED = ',"\r\n'  # what makes csv quote a field
_SLICE = 10_000  # disposals formatted at a time in a process of its own
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
            plan = _own_plan(ledger, parallel_events)
        if plan is not None:  # each asset group read, run, formatted and written by a process of its own
            scaled.ScaledEngine(method, quote, long_term_days)  # raises TaxError for an unknown method, before any fork
            try:
                with report.replacing(out) as tmp:
                    tally = _workers(ledger_path, plan, tmp, method, quote, long_term_days, year)
                return _finished(out, method, quote, tally)
            except _ReadsPrices:
                pass  # a trade needs other assets' prices: the ledger is read here, in one piece
        with Ledger(ledger_path) as ledger:
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
        ordered, pairs = scaled.events(trades, transfers)
        groups = _split(trades, transfers, quote) if len(ordered) >= parallel_events else None
        # This split hands the events to the second process through the fork itself: it needs a
        # process that may fork (see _single_threaded).
        if groups is None or not _can_fork() or not _single_threaded():
            part = _part(ordered, pairs, method, quote, long_term_days, year, None)
        else:
            part = _parallel(ordered, pairs, method, quote, long_term_days, year, groups, own_only)
        del ordered, pairs, trades, transfers
        with report.replacing(out) as tmp, tmp.open("w", newline="") as f:
            f.write(report.header())
            f.write("".join(part.lines))
        return _finished(out, method, quote, _Tally(len(part.lines), part.sums, part.warnings, [], part.holdings))


class _ReadsPrices(Exception):
    """A process of ``_workers`` found a trade that is not usual (``Ledger.only_usual_trades``)."""


@dataclass
class _Tally:
    """What a scaled report adds up besides its lines: their number, the sums per asset, the
    warnings (with their keys) and the holdings."""

    rows: int
    sums: dict[str, list[int]]
    warnings: list[str]
    warning_keys: list[int]
    holdings: dict[str, int]


def _finished(out: Path, method: str, quote: str, tally: _Tally) -> Report:
    """The ``Report`` of a scaled run whose lines are in ``out``: writes the summary beside it."""
    summary = report.summaries(tally.sums, scaled.SCALE)
    spath = report.write_summary(out, summary)
    holdings = {a: scaled.to_decimal(v) for a, v in tally.holdings.items()}
    return Report(method, quote, tally.rows, spath, summary, tally.warnings, holdings)


@dataclass
class _Plan:
    """How ``_workers`` splits a ledger in which no event reads a price: the groups of base assets,
    one process each, and the key that orders the trades (``Ledger.order_key``)."""

    groups: list[tuple[str, ...]]
    first: int
    step: int


def _own_plan(ledger: Ledger, parallel_events: int) -> _Plan | None:
    """A ``_Plan`` if the ledger is large, all in integers and without transfers, and this system
    can fork; else None (the ledger is then read here, in one piece). Whether every trade is usual
    is checked by the processes themselves, on their way through their trades."""
    if not _can_fork() or ledger.trade_count() < parallel_events or not ledger.all_integers():
        return None
    if ledger.has_transfers():
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


def _workers(
    ledger_path: Path, plan: _Plan, out: Path, method: str, quote: str, long_term_days: int, year: int | None
) -> _Tally:
    """Run every group of ``plan`` in a forked process of its own, which reads that group's trades
    from the ledger, runs their pools, formats their lines and writes them into ``out``, each where
    the ledger's order puts it. There are more groups than cores as a rule: the system shares the
    cores between them, so that unequal groups (five assets over two cores) still keep both cores
    busy to the end. Raises ``_ReadsPrices`` if a process finds a trade that is not usual.

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
        for group in plan.groups:
            mine, theirs = ctx.Pipe()
            child: BaseProcess = ctx.Process(
                target=_own_child,
                args=(theirs, ledger_path, group, plan.first, plan.step, out, method, quote, long_term_days, year),
                daemon=True,
            )
            child.start()
            children.append(child)
            theirs.close()
            conns.append(mine)
        keys: list[list[int]] = _gather(conns, children)
        every_key = [k for ks in keys for k in ks]
        order = sorted(range(len(every_key)), key=every_key.__getitem__)  # keys are unique
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
            n = tally.rows
            conn.send(where[k : k + n])
            k += n
        _gather(conns, children)  # each has written its lines
        done = True
    finally:
        for conn in conns:
            conn.close()
        for child in children:
            if not done:  # a process failed, or found a trade that reads prices: the others stop now
                child.terminate()
            child.join()
    sums: dict[str, list[int]] = {}
    holdings: dict[str, int] = {}
    for t in tallies:
        sums |= t.sums
        holdings |= t.holdings
    warnings = _merged([t.warnings for t in tallies], [t.warning_keys for t in tallies])
    return _Tally(len(lengths), sums, warnings, [], holdings)


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


def _own_child(
    conn: Connection,
    ledger_path: Path,
    assets: tuple[str, ...],
    first: int,
    step: int,
    out: Path,
    method: str,
    quote: str,
    long_term_days: int,
    year: int | None,
) -> None:
    """One process of ``_workers``: its assets' trades read, run, formatted and written."""
    try:
        with Ledger(ledger_path) as ledger:
            trades = [(a, ledger.own_trades(a, quote, first, step)) for a in assets]
        if any(rows and min(map(itemgetter(8), rows)) < 0 for _, rows in trades):  # fee_in -1: not usual
            conn.send(_ReadsPrices())
            return
        engine = scaled.ScaledEngine(method, quote, long_term_days)
        engine.mine, engine.lead = frozenset(assets), False  # no warning here belongs to no pool
        result = scaled.run_own(engine, trades)
        del trades
        disposals, keys = _kept(engine, result, year)
        conn.send(keys)
        lines = _encoded_lines(disposals)
        tally = _Tally(
            len(lines),
            report.sums(disposals),
            result.warnings,
            engine.warning_keys,
            result.holdings,  # type: ignore[arg-type]  # scaled ints
        )
        conn.send((list(map(len, lines)), tally))
        places: list[int] = conn.recv()
        if lines:
            with out.open("r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
                for place, text in zip(places, lines, strict=True):
                    mapped[place : place + len(text)] = text
        conn.send(None)
    except (BrokenPipeError, EOFError):  # the report stopped: nothing to send or write
        pass
    except (TaxError, OSError, ValueError, ArithmeticError, sqlite3.Error) as e:
        with suppress(BrokenPipeError):
            conn.send(e)
    finally:
        conn.close()


def _encoded_lines(disposals: list[Any]) -> list[bytes]:
    """``_lines`` as UTF-8, made a slice at a time: the figures' intermediate objects of one slice
    are freed before the next, which reuses their memory instead of asking the system for more."""
    out: list[bytes] = []
    for start in range(0, len(disposals), _SLICE):
        out += map(str.encode, _lines(disposals[start : start + _SLICE]))
    return out


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


def _kept(engine: scaled.ScaledEngine, result: Result, year: int | None) -> tuple[list[Any], list[int]]:
    """The disposals of a run engine within ``year``, and their keys."""
    disposals, keys = result.disposals, engine.disposal_keys
    if year is not None:
        kept = set(map(id, report.in_year(disposals, year)))
        keys = [k for k, d in zip(keys, disposals, strict=True) if id(d) in kept]
        disposals = [d for d in disposals if id(d) in kept]
    return disposals, keys


def _finish(engine: scaled.ScaledEngine, result: Result, year: int | None) -> _Part:
    """The part of a run engine: its lines (within ``year``), sums, warnings and holdings."""
    disposals, keys = _kept(engine, result, year)
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
    # Only a name (an asset, an account, a trade's or a lot's reference) can hold a character that
    # needs quoting: figures, dates and the other columns never do. Most reports have none.
    names = "".join(
        chain(
            map(attrgetter("asset"), disposals),
            map(attrgetter("source"), disposals),
            map(attrgetter("ref"), disposals),
            [p.lot_id for d in disposals for p in d.lots],
        )
    )
    if not any(c in names for c in _QUOTED):
        return out
    separators = len(report.COLUMNS) - 1
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
