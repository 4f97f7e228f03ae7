"""Write a tax report: one CSV row per disposal and a summary per asset and holding period.

``gains.csv`` columns::

    date, asset, amount, proceeds, cost_basis, gain, holding_period, held_days, kind, account, ref,
    matched_lots

``matched_lots`` is ``lot_id@acquired_date:amount:cost`` joined with ``|``. The summary
(``gains.summary.csv`` beside it) has one row per asset with short-term and long-term proceeds,
cost and gain, and a ``TOTAL`` row.

Figures come as ``Decimal`` (``engine.py``) or as scaled integers (``scaled.py``, ``scale`` > 0);
both are written as plain decimals, money without trailing zeros.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from itertools import product, repeat
from operator import floordiv, mod, truediv
from pathlib import Path
from typing import Any

from keyplane.apps.money import CONTEXT
from keyplane.apps.tax import scaled
from keyplane.apps.tax.engine import Disposal, paused_gc
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

    def add(self, d: Disposal) -> None:
        if d.term == "long":
            self.long_proceeds = CONTEXT.add(self.long_proceeds, d.proceeds)
            self.long_cost = CONTEXT.add(self.long_cost, d.cost)
        else:
            self.short_proceeds = CONTEXT.add(self.short_proceeds, d.proceeds)
            self.short_cost = CONTEXT.add(self.short_cost, d.cost)

    def row(self) -> list[str]:
        return [
            self.asset,
            *(num(v) for v in (self.short_proceeds, self.short_cost, self.short_gain)),
            *(num(v) for v in (self.long_proceeds, self.long_cost, self.long_gain)),
            num(self.total_gain),
        ]


def summarise(disposals: list[Disposal], scale: int = 0) -> list[AssetSummary]:
    """Totals per asset and a ``TOTAL`` row; ``scale`` is ``Result.scale`` (figures as integers)."""
    if scale:
        return summaries(sums(disposals), scale)
    by_asset: dict[str, AssetSummary] = {}
    total = AssetSummary("TOTAL")
    for d in disposals:
        by_asset.setdefault(d.asset, AssetSummary(d.asset)).add(d)
        total.add(d)
    return [*(by_asset[a] for a in sorted(by_asset)), total]


def sums(disposals: list[Disposal]) -> dict[str, list[Any]]:
    """Per asset: short-term proceeds and cost, long-term proceeds and cost."""
    out: dict[str, list[Any]] = {}
    for d in disposals:
        s = out.get(d.asset)
        if s is None:
            s = out[d.asset] = [0, 0, 0, 0]
        i = 2 if d.term == "long" else 0
        s[i] += d.proceeds
        s[i + 1] += d.cost
    return out


def summaries(by_asset: dict[str, list[int]], scale: int) -> list[AssetSummary]:
    """``summarise`` from ``sums`` of scaled integers (exact, in any order)."""
    total = [sum(col) for col in zip(*by_asset.values(), strict=True)] or [0, 0, 0, 0]
    dec = scaled.to_decimal
    return [AssetSummary(a, *map(dec, v)) for a, v in [*sorted(by_asset.items()), ("TOTAL", total)]]


def row(d: Disposal) -> list[str]:
    # Amounts are sums of the exchange's own figures and print as they are; money went through
    # ``QUANTUM`` and loses its trailing zeros. Written for speed: a report can have a million rows.
    lots = "|".join([f"{p.lot_id}@{day(p.acquired_ts)}:{p.amount}:{num(p.cost)}" for p in d.lots])
    secs = (d.ts // 1000) % 86_400
    return [
        f"{day(d.ts)}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}Z",
        d.asset,
        str(d.amount),
        num(d.proceeds),
        num(d.cost),
        num(d.gain),
        d.term,
        str(d.held_days),
        d.kind,
        d.source,
        d.ref,
        lots,
    ]


def line(d: Disposal) -> str:
    """``row(d)`` as one CSV line, built directly: twice as fast as the csv module on a million
    rows. ``write`` checks that nothing in it needs quoting, and falls back on ``csv`` if it does."""
    days, plain = _DAYS, _plain
    pieces = d.lots
    if len(pieces) == 1:  # the usual case: one lot, no list to join
        p = pieces[0]
        lots = f"{p.lot_id}@{days.get(p.acquired_ts // 86_400_000) or day(p.acquired_ts)}:{p.amount}:{plain(p.cost)}"
    else:
        lots = "|".join([f"{p.lot_id}@{day(p.acquired_ts)}:{p.amount}:{plain(p.cost)}" for p in pieces])
    ts = d.ts
    secs = (ts // 1000) % 86_400
    return (
        f"{days.get(ts // 86_400_000) or day(ts)}T{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}Z,"
        f"{d.asset},{d.amount},{plain(d.proceeds)},{plain(d.cost)},{plain(d.gain)},{d.term},{d.held_days},"
        f"{d.kind},{d.source},{d.ref},{lots}\r\n"
    )


def _plain(d: Decimal) -> str:
    """``num(d)`` with the common case (no exponent) first: called several times per CSV line."""
    text = str(d)
    if "E" in text:
        return num(d)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


_ONE = Decimal(scaled.ONE)
_CHUNK = 20_000


def texts(values: list[int]) -> list[str]:
    """``scaled.text`` of every value, in bulk: each value becomes ``Decimal(value) / 10**SCALE``
    (exact, and without trailing zeros) and then text, all in C loops, which is several times
    faster than formatting integers one by one in Python."""
    if not values or max(values) >= 10**40 or min(values) <= -(10**40):
        return [scaled.text(v) for v in values]
    with localcontext(CONTEXT):  # 50 digits: every quotient is exact, of no more than 40 digits
        out = list(map(str, map(truediv, map(Decimal, values), repeat(_ONE))))
    if "E" in "".join(out):  # a tiny value, which str() writes with an exponent
        out = [scaled.text(v) if "E" in t else t for v, t in zip(values, out, strict=True)]
    return out


def scaled_lines(disposals: list[Disposal]) -> list[str]:
    """``line(d)`` for each disposal whose figures are scaled integers (``scaled.py``): every
    column is made for all the disposals at once, and the lines assembled by ``str.format`` in a
    C loop; only a disposal of several lots takes a step in Python."""
    if not disposals:
        return []
    pieces = [p for d in disposals for p in d.lots]
    stamps = [p.acquired_ts for p in pieces]
    lots = list(
        map(
            "{}@{}:{}:{}".format,
            [p.lot_id for p in pieces],
            _days(stamps),
            texts([p.amount for p in pieces]),  # type: ignore[misc]
            texts([p.cost for p in pieces]),  # type: ignore[misc]
        )
    )
    counts = [len(d.lots) for d in disposals]
    if len(lots) != len(disposals):  # some disposals have several lots: join theirs
        joined, k = [], 0
        for n in counts:
            joined.append(lots[k] if n == 1 else "|".join(lots[k : k + n]))
            k += n
        lots = joined
    times = [d.ts for d in disposals]
    clock = _clock()
    return list(
        map(
            "{}T{}Z,{},{},{},{},{},{},{},{},{},{},{}\r\n".format,
            _days(times),
            map(clock.__getitem__, map(mod, map(floordiv, times, repeat(1000)), repeat(86_400))),
            [d.asset for d in disposals],
            texts([d.amount for d in disposals]),  # type: ignore[misc]
            texts([d.proceeds for d in disposals]),  # type: ignore[misc]
            texts([d.cost for d in disposals]),  # type: ignore[misc]
            texts([d.gain for d in disposals]),  # type: ignore[misc]
            [d.term for d in disposals],
            [d.held_days for d in disposals],
            [d.kind for d in disposals],
            [d.source for d in disposals],
            [d.ref for d in disposals],
            lots,
        )
    )


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


def row_scaled(d: Disposal) -> list[str]:
    """``row(d)`` for a disposal whose figures are scaled integers."""
    t = scaled.text
    lots = "|".join([f"{p.lot_id}@{day(p.acquired_ts)}:{t(p.amount)}:{t(p.cost)}" for p in d.lots])  # type: ignore[arg-type]
    return [iso(d.ts), d.asset, *(t(v) for v in (d.amount, d.proceeds, d.cost, d.gain)), d.term, str(d.held_days),
            d.kind, d.source, d.ref, lots]  # fmt: skip


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


def _write_rows(out: Path, disposals: list[Disposal], scale: int) -> None:
    with paused_gc(), replacing(out) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        f.write(header())
        separators = len(COLUMNS) - 1
        for start in range(0, len(disposals), _CHUNK):
            chunk = disposals[start : start + _CHUNK]
            lines = scaled_lines(chunk) if scale else [line(d) for d in chunk]
            for d, text in zip(chunk, lines, strict=True):
                if (
                    text.count(",") == separators
                    and '"' not in text
                    and text.count("\n") == 1
                    and text.count("\r") == 1
                ):
                    f.write(text)
                else:  # a name with a comma, quote or newline: let csv quote it
                    w.writerow(row_scaled(d) if scale else row(d))


def write(out: Path, disposals: list[Disposal], scale: int = 0) -> tuple[Path, list[AssetSummary]]:
    """Write the rows to ``out`` and the summary beside it; returns (summary path, summary).
    ``scale`` is the result's (``Result.scale``)."""
    _write_rows(out, disposals, scale)
    summary = summarise(disposals, scale)
    return write_summary(out, summary), summary


def write_summary(out: Path, summary: list[AssetSummary]) -> Path:
    """Write ``summary`` beside ``out``; returns its path."""
    spath = summary_path(out)
    with replacing(spath) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SUMMARY_COLUMNS)
        for s in summary:
            w.writerow(s.row())
    return spath
