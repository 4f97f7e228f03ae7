"""Typed rows that the exchange services return (frozen dataclasses).

Each row is also a read-only mapping of its column names (``row["price"]``, ``{**row}``,
``row.as_dict()``), the same keys and values as the ``dict`` rows they replace, so the routes that
render them produce the same JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar


class Row(Mapping[str, object]):
    __slots__ = ()
    # @dataclass sets it on each row: the field names in order (every field is positional).
    __match_args__: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return cls.__match_args__

    def __getitem__(self, key: str) -> object:
        if key not in self.names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.names()}


@dataclass(frozen=True, slots=True, eq=True)
class PublicTrade(Row):
    """A trade on the public tape (``GET /api/v3/trades``)."""

    id: int
    price: int
    qty: int
    quote_qty: int
    ts: int
    buyer_is_maker: bool


@dataclass(frozen=True, slots=True, eq=True)
class AccountTrade(Row):
    """One side of a trade, as the account that took part sees it (``GET /api/v3/myTrades``)."""

    trade_id: int
    order_id: int
    price: int
    qty: int
    quote_qty: int
    commission: int
    commission_asset: str
    ts: int
    is_buyer: bool
    is_maker: bool
    id: int


@dataclass(frozen=True, slots=True, eq=True)
class Deposit(Row):
    id: int
    coin: str
    network: str
    amount: int
    address: str
    tx_id: str
    status: int
    ts: int


@dataclass(frozen=True, slots=True, eq=True)
class Withdrawal(Row):
    id: str
    coin: str
    network: str
    address: str
    address_tag: str
    amount: int
    fee: int
    status: int
    tx_id: str
    apply_ms: int
    update_ms: int
    complete_ms: int | None


@dataclass(frozen=True, slots=True, eq=True)
class AllowedAddress(Row):
    """An entry of an account's withdrawal address allowlist."""

    id: int
    coin: str
    address: str
    label: str
    created_ms: int
