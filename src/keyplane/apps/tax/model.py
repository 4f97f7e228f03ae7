"""The ledger's records: trades and transfers, with exact ``Decimal`` amounts.

A trade is what ccxt calls a trade (one fill): ``amount`` of ``base`` bought or sold for ``cost``
of ``quote``, and a ``fee`` in ``fee_asset`` (which may be the base, the quote or a third asset).
``fee_value`` is the fee's value in the report currency when the source knows it (the CSV import
accepts it), for fees paid in a third asset.

A transfer is a deposit or a withdrawal; ``fee`` is the withdrawal (network) fee, which is included
in ``amount`` (the amount that left the account).

Both are named tuples: a report reads a million of them, and a tuple is the cheapest record.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, NamedTuple

Side = Literal["buy", "sell"]
Kind = Literal["deposit", "withdrawal"]
ZERO = Decimal(0)


class Trade(NamedTuple):
    source: str
    id: str
    ts: int  # ms since the epoch, UTC
    base: str
    quote: str
    side: Side
    amount: Decimal
    cost: Decimal
    fee: Decimal = ZERO
    fee_asset: str | None = None
    fee_value: Decimal | None = None
    order_id: str | None = None


class Transfer(NamedTuple):
    source: str
    id: str
    kind: Kind
    ts: int
    asset: str
    amount: Decimal
    fee: Decimal = ZERO
    txid: str | None = None
    address: str | None = None
