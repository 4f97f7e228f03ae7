"""keyplane's tax engine with ``Decimal`` in and out, for tests that state cases in plain figures.

``compute`` takes the ledger's records (``model.Trade``, ``model.Transfer``) in the order a ledger
would store them, runs them through the engine in one process, at the scale a report of them
would use, and gives the figures back as exact ``Decimal``s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from keyplane.apps.tax.engine import Engine, match_transfers, merged, run
from keyplane.apps.tax.figures import STORED, decimals, to_decimal, to_int
from keyplane.apps.tax.model import Trade, Transfer
from keyplane.apps.tax.prices import Row, TransferRow, resolve


@dataclass(frozen=True)
class Piece:
    lot_id: str
    acquired_ts: int
    amount: Decimal
    cost: Decimal


@dataclass(frozen=True)
class Disposal:
    ts: int
    asset: str
    amount: Decimal
    proceeds: Decimal
    cost: Decimal
    gain: Decimal
    term: str
    kind: str
    source: str
    ref: str
    lots: list[Piece]
    held_days: int


@dataclass
class Result:
    method: str
    quote: str
    scale: int
    disposals: list[Disposal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    holdings: dict[str, Decimal] = field(default_factory=dict)
    own_transfers: int = 0


def scale_of(trades: list[Trade], transfers: list[Transfer]) -> int:
    figures = [d for t in trades for d in (t.amount, t.cost, t.fee, t.fee_value) if d is not None]
    figures += [d for t in transfers for d in (t.amount, t.fee)]
    return max([STORED, *map(decimals, figures)])


def events(trades: list[Trade], transfers: list[Transfer], scale: int) -> list[Row | TransferRow]:
    """The records as the ledger's ``rows`` reads them: keyed by time, place and storing order."""

    def n(d: Decimal) -> int:
        v = to_int(d, scale)
        assert v is not None, d
        return v

    stamps = [t.ts for t in trades] + [t.ts for t in transfers]
    first = min(stamps, default=0)
    step = 1 << (max(len(trades), len(transfers)) + 1).bit_length()

    def key(ts: int, place: int, i: int) -> int:
        return ((ts - first) * 3 + place) * step + i + 1

    out: list[Row | TransferRow] = [
        Row(key(t.ts, 1, i), t.source, f"{t.source}:trade:{t.id}", t.ts, t.base, t.quote, t.side, n(t.amount),
            n(t.cost), n(t.fee), t.fee_asset, None if t.fee_value is None else n(t.fee_value))
        for i, t in enumerate(trades)
    ]  # fmt: skip
    out += [
        TransferRow(key(t.ts, 0 if t.kind == "deposit" else 2, i), t.source, t.id, t.kind, t.ts, t.asset,
                    n(t.amount), n(t.fee), t.txid, t.address)
        for i, t in enumerate(transfers)
    ]  # fmt: skip
    return sorted(out, key=lambda e: e.key)


def compute(
    trades: Iterable[Trade],
    transfers: Iterable[Transfer] = (),
    *,
    method: str = "fifo",
    quote: str = "USDT",
    long_term_days: int = 365,
) -> Result:
    trades, transfers = list(trades), list(transfers)
    scale = scale_of(trades, transfers)
    evs = events(trades, transfers, scale)
    pairs = match_transfers(e for e in evs if type(e) is TransferRow)
    found = resolve(evs, quote.upper(), set(pairs.values()))
    engine = Engine(method, quote, long_term_days, scale, found)
    got = run(engine, evs, pairs)

    def d(v: int) -> Decimal:
        return to_decimal(v, scale)

    return Result(
        got.method,
        got.quote,
        scale,
        [
            Disposal(
                x.ts,
                x.asset,
                d(x.amount),
                d(x.proceeds),
                d(x.cost),
                d(x.gain),
                x.term,
                x.kind,
                x.source,
                x.ref,
                [Piece(p.lot_id, p.acquired_ts, d(p.amount), d(p.cost)) for p in x.lots],
                x.held_days,
            )
            for x in got.disposals
        ],
        merged([found.warnings, got.warnings], [found.warning_keys, got.warning_keys]),
        {a: d(v) for a, v in got.holdings.items()},
        got.own_transfers,
    )
