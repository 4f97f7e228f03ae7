"""Draw the portfolio: value over time (left) and the current allocation (right), as PNG or SVG."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from keyplane.apps.portfolio.tracker import Snapshot

FORMATS = ("png", "svg")


def render(history: list[tuple[int, Decimal]], latest: Snapshot | None, fmt: str) -> bytes:
    """The chart as ``fmt`` bytes. Uses matplotlib's object API (no pyplot, no display needed)."""
    from matplotlib.figure import Figure

    if fmt not in FORMATS:
        raise ValueError(f"unsupported chart format {fmt!r} (use .png or .svg)")
    quote = latest.quote if latest else "USDT"
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    if history:
        xs = [datetime.fromtimestamp(ts / 1000, UTC) for ts, _ in history]
        ys = [float(v) for _, v in history]  # plotting only; the stored values stay exact
        left.plot(xs, ys, marker="o", linewidth=1.5)
        fig.autofmt_xdate()
    left.set_title(f"Portfolio value ({quote})")
    left.set_ylabel(quote)
    left.grid(True, alpha=0.3)
    alloc = latest.allocation() if latest else {}
    if alloc:
        labels = list(alloc)
        right.pie([float(v) for v in alloc.values()], labels=[f"{a} {alloc[a]}%" for a in labels], startangle=90)
        right.set_title("Allocation")
    else:
        right.text(0.5, 0.5, "no valued holdings yet", ha="center", va="center")
        right.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


def write(out: Path, history: list[tuple[int, Decimal]], latest: Snapshot | None) -> None:
    fmt = out.suffix.lower().lstrip(".")
    data = render(history, latest, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
