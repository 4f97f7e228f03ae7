"""Write a tax report: one CSV row per disposal and a summary per asset and holding period.

``gains.csv`` columns::

    date, asset, amount, proceeds, cost_basis, gain, holding_period, held_days, kind, account, ref,
    matched_lots

``matched_lots`` is ``lot_id@acquired_date:amount:cost`` joined with ``|``. The summary
(``gains.summary.csv`` beside it) has one row per asset with short-term and long-term proceeds,
cost and gain, and a ``TOTAL`` row.

Figures come as scaled integers (``figures.py``) and are written as plain decimals, without
trailing zeros.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import product, repeat
from operator import floordiv, mod
from pathlib import Path

from keyplane.apps.money import CONTEXT
from keyplane.apps.tax.engine import Disposal
from keyplane.apps.tax.figures import text, texts, to_decimal
from keyplane.apps.tax.model import ZERO

COLUMNS = [
    "date",
    "asset",
    "amount",
    "proceeds",
    "cost_basis",
    "gain",
    "holding_period",
    "held_days",
    "kind",
    "account",
    "ref",
    "matched_lots",
]
SUMMARY_COLUMNS = [
    "asset",
    "short_proceeds",
    "short_cost",
    "short_gain",
    "long_proceeds",
    "long_cost",
    "long_gain",
    "total_gain",
]


_DAYS: dict[int, str] = {}


def day(ts_ms: int) -> str:
    """``YYYY-MM-DD`` (UTC), cached: a report names the same days over and over."""
    d = ts_ms // 86_400_000
    text = _DAYS.get(d)
    if text is None:
        text = _DAYS[d] = datetime.fromtimestamp(d * 86_400, UTC).strftime("%Y-%m-%d")
    return text


def iso(ts_ms: int) -> str:
    secs = (ts_ms // 1000) % 86_400
    return f"{day(ts_ms)}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}Z"


def num(d: Decimal) -> str:
    """A plain decimal string: no exponent, no trailing zeros."""
    text = str(d)
    if "E" in text:
        text = f"{d:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def in_year(disposals: list[Disposal], year: int | None) -> list[Disposal]:
    if year is None:
        return disposals
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp() * 1000)
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp() * 1000)
    return [d for d in disposals if start <= d.ts < end]


@dataclass
class AssetSummary:
    asset: str
    short_proceeds: Decimal = ZERO
    short_cost: Decimal = ZERO
    long_proceeds: Decimal = ZERO
    long_cost: Decimal = ZERO

    # In ``CONTEXT``, not the thread's: sums of large figures round alike everywhere.
    @property
    def short_gain(self) -> Decimal:
        return Decimal(CONTEXT.subtract(self.short_proceeds, self.short_cost))

    @property
    def long_gain(self) -> Decimal:
        return Decimal(CONTEXT.subtract(self.long_proceeds, self.long_cost))

    @property
    def total_gain(self) -> Decimal:
        return Decimal(CONTEXT.add(self.short_gain, self.long_gain))

    def row(self) -> list[str]:
        return [
            self.asset,
            *(num(v) for v in (self.short_proceeds, self.short_cost, self.short_gain)),
            *(num(v) for v in (self.long_proceeds, self.long_cost, self.long_gain)),
            num(self.total_gain),
        ]


def sums(disposals: list[Disposal]) -> dict[str, list[int]]:
    """Per asset: short-term proceeds and cost, long-term proceeds and cost."""
    out: dict[str, list[int]] = {}
    for d in disposals:
        s = out.get(d.asset)
        if s is None:
            s = out[d.asset] = [0, 0, 0, 0]
        i = 2 if d.term == "long" else 0
        s[i] += d.proceeds
        s[i + 1] += d.cost
    return out


def summaries(by_asset: dict[str, list[int]], scale: int) -> list[AssetSummary]:
    """A summary per asset and a ``TOTAL`` row, from ``sums`` (exact, added in any order)."""
    total = [sum(col) for col in zip(*by_asset.values(), strict=True)] or [0, 0, 0, 0]
    rows = [*sorted(by_asset.items()), ("TOTAL", total)]
    return [AssetSummary(a, *(to_decimal(n, scale) for n in v)) for a, v in rows]


def lines(disposals: list[Disposal], scale: int) -> list[str]:
    """The CSV line of each disposal: every column is made for all the disposals at once, and the
    lines assembled by ``str.format`` in a C loop; only a disposal of several lots takes a step in
    Python. A line whose names need quoting is written by ``csv`` (``row``)."""
    if not disposals:
        return []
    pieces = [p for d in disposals for p in d.lots]
    stamps = [p.acquired_ts for p in pieces]
    lots = list(
        map(
            "{}@{}:{}:{}".format,
            [p.lot_id for p in pieces],
            _days(stamps),
            texts([p.amount for p in pieces], scale),
            texts([p.cost for p in pieces], scale),
        )
    )
    if len(lots) != len(disposals):  # some disposals have several lots: join theirs
        joined, k = [], 0
        for n in (len(d.lots) for d in disposals):
            joined.append(lots[k] if n == 1 else "|".join(lots[k : k + n]))
            k += n
        lots = joined
    times = [d.ts for d in disposals]
    clock = _clock()
    out = list(
        map(
            "{}T{}Z,{},{},{},{},{},{},{},{},{},{},{}\r\n".format,
            _days(times),
            map(clock.__getitem__, map(mod, map(floordiv, times, repeat(1000)), repeat(86_400))),
            [d.asset for d in disposals],
            texts([d.amount for d in disposals], scale),
            texts([d.proceeds for d in disposals], scale),
            texts([d.cost for d in disposals], scale),
            texts([d.gain for d in disposals], scale),
            [d.term for d in disposals],
            [d.held_days for d in disposals],
            [d.kind for d in disposals],
            [d.source for d in disposals],
            [d.ref for d in disposals],
            lots,
        )
    )
    # Only a name (an asset, an account, a trade's or a lot's reference) can hold a character that
    # needs quoting: figures, dates and the other columns never do. Most reports have none.
    names = "".join([*(d.asset + d.source + d.ref for d in disposals), *(p.lot_id for p in pieces)])
    if any(c in names for c in _QUOTED):
        for i, d in enumerate(disposals):
            if any(c in d.asset + d.source + d.ref + "".join(p.lot_id for p in d.lots) for c in _QUOTED):
                buf = io.StringIO()
                csv.writer(buf).writerow(row(d, scale))
                out[i] = buf.getvalue()
    return out


_QUOTED = ',"\r\n'  # what makes csv quote a field


def _days(stamps: list[int]) -> list[str]:
    """``day(ts)`` of every time stamp (ms), in C loops once each day is cached."""
    numbers = list(map(floordiv, stamps, repeat(86_400_000)))
    days = _DAYS
    for n in set(numbers).difference(days):
        day(n * 86_400_000)
    return list(map(days.__getitem__, numbers))


_CLOCK: list[str] = []


def _clock() -> list[str]:
    """``HH:MM:SS`` for every second of a day, made once: cheaper than formatting a million times."""
    if not _CLOCK:
        sixty = [f"{n:02d}" for n in range(60)]
        _CLOCK.extend(map(":".join, product(sixty[:24], sixty, sixty)))  # in C: a report process makes its own
    return _CLOCK


def row(d: Disposal, scale: int) -> list[str]:
    """The CSV fields of a disposal, for ``csv`` to quote."""
    lots = "|".join([f"{p.lot_id}@{day(p.acquired_ts)}:{text(p.amount, scale)}:{text(p.cost, scale)}" for p in d.lots])
    figures = (text(v, scale) for v in (d.amount, d.proceeds, d.cost, d.gain))
    return [iso(d.ts), d.asset, *figures, d.term, str(d.held_days), d.kind, d.source, d.ref, lots]


def summary_path(out: Path) -> Path:
    return out.with_name(out.stem + ".summary" + (out.suffix or ".csv"))


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that takes its place once the block has run: a report that
    fails half-way leaves the previous file as it was, and no partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def header() -> str:
    """The first line of a disposals file, as ``csv`` writes it."""
    return ",".join(COLUMNS) + "\r\n"  # no column name needs quoting


def write_summary(out: Path, summary: list[AssetSummary]) -> Path:
    """Write ``summary`` beside ``out``; returns its path."""
    spath = summary_path(out)
    with replacing(spath) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_COLUMNS)
        for s in summary:
            w.writerow(s.row())
    return spath
