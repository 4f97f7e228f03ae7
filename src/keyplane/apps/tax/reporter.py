"""``keyplane tax report`` from end to end: the ledger file in, ``gains.csv`` and its summary out.

A ledger in scaled integers (``scaled.py``; the usual case) runs through the integer engine. A
large one is split over two processes by asset: each asset's pool depends only on the trades,
fees and transfers of that asset, in order, and on the prices of the other assets (for a fee in a
third asset or a crypto-to-crypto trade), which every process follows through all the trades. So a
forked process runs the pools of about half of the assets, and this one the others; both format
their CSV lines, and this one merges them in the order one engine would have written them (every
disposal carries the place of its event). The result is byte for byte the single-process one.

A ledger with an amount of more than ``scaled.SCALE`` decimals runs through the ``Decimal``
engine (``engine.py``), in one process.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection
from operator import itemgetter
from pathlib import Path
from typing import Any

from keyplane.apps.tax import report, scaled
from keyplane.apps.tax.engine import TaxError, compute, paused_gc
from keyplane.apps.tax.ledger import Ledger, NotScaled

PARALLEL_EVENTS = 200_000  # from this many trades and transfers, two processes share the work


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
    with paused_gc():
        with Ledger(ledger_path) as ledger:
            try:
                trades, transfers = ledger.scaled_trades(), ledger.scaled_transfers()
                own_only = ledger.only_usual_trades(quote.upper())
            except NotScaled:
                result = compute(
                    ledger.trades(), ledger.transfers(), method=method, quote=quote, long_term_days=long_term_days
                )
                rows = report.in_year(result.disposals, year)
                spath, summary = report.write(out, rows)
                return Report(method, result.quote, len(rows), spath, summary, result.warnings, result.holdings)
        ordered, pairs = scaled.events(trades, transfers)
        groups = _split(trades, transfers, quote.upper()) if len(ordered) >= parallel_events else None
        if groups is None or not _can_fork():
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
        return Report(method, quote.upper(), len(part.lines), spath, summary, part.warnings, holdings)


def _can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and (os.cpu_count() or 1) > 1


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
    return _merge(mine, theirs)


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


def _merged(a: list[Any], a_keys: list[int], b: list[Any], b_keys: list[int]) -> list[Any]:
    """The items of ``a`` and ``b`` (each in key order) in key order; ``a`` first on equal keys."""
    keys = a_keys + b_keys
    items = a + b
    order = sorted(range(len(keys)), key=keys.__getitem__)  # stable, and two runs: one merge
    return list(map(items.__getitem__, order))


def _merge(a: _Part, b: _Part) -> _Part:
    return _Part(
        _merged(a.lines, a.line_keys, b.lines, b.line_keys),
        [],
        a.sums | b.sums,  # each asset is in one part only
        _merged(a.warnings, a.warning_keys, b.warnings, b.warning_keys),
        [],
        a.holdings | b.holdings,
    )
