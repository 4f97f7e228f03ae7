"""Import trades from a plain CSV, for exchanges without an API.

The first line is a header; column order does not matter. Columns:

=============  ========  ================================================================
column         required  meaning
=============  ========  ================================================================
date           yes       UTC time: ``2026-03-01T12:00:00Z``, ``2026-03-01 12:00:00``,
                         ``2026-03-01`` or milliseconds since the epoch
side           yes       ``buy`` or ``sell``
symbol         yes       ``BASE/QUOTE``, e.g. ``BTC/USDT``
amount         yes       units of BASE bought or sold (> 0)
price          one of    QUOTE per unit of BASE
cost           one of    total QUOTE paid or received (wins over price when both are given)
fee            no        fee amount (default 0)
fee_asset      if fee    asset the fee was paid in (BASE, QUOTE or a third asset)
fee_value      no        the fee's value in the report currency, for a third-asset fee
id             no        the exchange's trade id; default: a hash of the row, so importing the
                         same file twice adds nothing (identical rows count as separate trades)
=============  ========  ================================================================

A row that does not parse stops the import (nothing is stored) with ``file:line: field 'x': why``.
"""

from __future__ import annotations

import csv
import hashlib
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

from keyplane.apps.tax.model import ZERO, Side, Trade

REQUIRED = ("date", "side", "symbol", "amount")


class CsvError(Exception):
    pass


def parse_date(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        return int(text)
    value = text.replace("Z", "+00:00")
    for candidate in (value, value.replace(" ", "T")):
        try:
            dt = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    raise ValueError("not a date (use 2026-03-01T12:00:00Z or epoch milliseconds)")


def _decimal(text: str, *, positive: bool = False, allow_zero: bool = True) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text.strip()!r} is not a number") from None
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value < 0 or (positive and value == 0 and not allow_zero):
        raise ValueError("must be greater than 0" if positive else "must not be negative")
    return value


def read(path: Path, account: str) -> list[Trade]:
    """Parse every row of ``path``; raises ``CsvError`` naming the first bad line and field."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as e:
        raise CsvError(f"{path}: {e.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise CsvError(f"{path}:1: missing column(s) {', '.join(missing)}")
        if "price" not in header and "cost" not in header:
            raise CsvError(f"{path}:1: needs a 'price' or a 'cost' column")
        trades: list[Trade] = []
        seen: dict[str, int] = {}
        for raw in reader:
            line = reader.line_num
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            content = "|".join(f"{k}={row[k]}" for k in sorted(row))
            seen[content] = seen.get(content, 0) + 1
            trades.append(_row(path, line, row, account, f"{content}#{seen[content]}"))
        return trades


def _row(path: Path, line: int, row: dict[str, str], account: str, content: str) -> Trade:
    field = ""
    try:
        field = "date"
        ts = parse_date(row["date"])
        field = "side"
        side = row["side"].lower()
        if side not in ("buy", "sell"):
            raise ValueError("must be buy or sell")
        field = "symbol"
        base, sep, quote = row["symbol"].upper().partition("/")
        if not sep or not base or not quote:
            raise ValueError("must look like BASE/QUOTE, e.g. BTC/USDT")
        field = "amount"
        amount = _decimal(row["amount"], positive=True, allow_zero=False)
        if row.get("cost"):
            field = "cost"
            cost = _decimal(row["cost"])
        else:
            field = "price"
            if not row.get("price"):
                raise ValueError("is empty (give a price or a cost)")
            cost = _decimal(row["price"]) * amount
        field = "fee"
        fee = _decimal(row["fee"]) if row.get("fee") else ZERO
        field = "fee_asset"
        fee_asset = row.get("fee_asset", "").upper() or None
        if fee and not fee_asset:
            raise ValueError("is required when there is a fee")
        field = "fee_value"
        fee_value = _decimal(row["fee_value"]) if row.get("fee_value") else None
    except ValueError as e:
        raise CsvError(f"{path}:{line}: field {field!r}: {e}") from None
    trade_id = row.get("id") or "csv-" + hashlib.sha256(content.encode()).hexdigest()[:24]
    s: Side = "buy" if side == "buy" else "sell"
    return Trade(account, trade_id, ts, base, quote, s, amount, cost, fee, fee_asset, fee_value)
