"""Assets and spot markets: their configuration, and exact conversion between decimal text and
integer base units.

Every amount is an integer count of the asset's smallest unit (``10**-decimals``). Prices are
integer quote units per one whole base unit. A market's tick and step are checked at load time so
that ``qty * price`` is always a whole number of quote units: notional arithmetic never rounds.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from keyplane import parsing
from keyplane.exchange.errors import BadParameter, IllegalCharacters, TooPrecise

_LEGAL = "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'"


class MarketConfigError(ValueError):
    """The markets file is wrong; the message names the entry."""


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    decimals: int = 8
    network: str = ""
    withdraw_fee: int = 0  # base units
    withdraw_min: int = 0
    faucet_amount: int = 0
    address_pattern: str = r"[A-Za-z0-9]{20,100}"

    @property
    def scale(self) -> int:
        return int(10**self.decimals)

    def fmt(self, units: int) -> str:
        return format(Decimal(units).scaleb(-self.decimals), f".{self.decimals}f")

    def plain(self, units: int) -> str:
        """``units`` as people write the amount (see :func:`plain`): ``0.5``, not ``0.50000000``."""
        return plain(Decimal(units).scaleb(-self.decimals))

    def valid_address(self, address: str) -> bool:
        return re.fullmatch(self.address_pattern, address) is not None


@dataclass(frozen=True, slots=True)
class Market:
    symbol: str
    base: Asset
    quote: Asset
    tick: int  # price units (quote base units per whole base unit)
    step: int  # base units
    min_qty: int
    max_qty: int
    min_price: int
    max_price: int
    min_notional: int  # quote units
    maker_fee: Decimal
    taker_fee: Decimal

    def notional(self, qty: int, price: int) -> int:
        """Quote units for ``qty`` base units at ``price``; exact by construction (see module doc)."""
        return qty * price // self.base.scale

    def qty_for_quote(self, quote_units: int, price: int) -> int:
        """The largest step multiple of base units that ``quote_units`` buys at ``price``."""
        raw = quote_units * self.base.scale // price
        return raw - raw % self.step

    def price_text(self, units: int) -> str:
        return self.quote.fmt(units)

    def qty_text(self, units: int) -> str:
        return self.base.fmt(units)


def to_units(text: str | None, name: str, asset: Asset) -> int:
    """``text`` (a non-negative decimal in Binance's accepted form) in the asset's base units; at
    most a signed 64-bit count, as the ledger stores. Raises the Binance error for each way it is not."""
    try:
        value = parsing.plain_decimal(text or "", name, int_digits=20, frac_digits=20)
    except parsing.ParseError as e:
        raise IllegalCharacters(f"Illegal characters found in parameter '{name}'; {_LEGAL}.") from e
    shown = (text or "").strip()[:40]
    scaled = value.scaleb(asset.decimals)
    if scaled != scaled.to_integral_value():
        raise TooPrecise(
            f"Precision is over the maximum defined for this asset: {name} {shown} has more than "
            f"{asset.decimals} decimals."
        )
    units = int(scaled)
    if units > parsing.INT64_MAX:
        raise BadParameter(
            f"Parameter '{name}' is too large: {shown} {asset.name} is over the maximum of "
            f"{asset.plain(parsing.INT64_MAX)}."
        )
    return units


def plain(value: Decimal) -> str:
    """A decimal as people write it: ``100``, not ``1E+2``; ``0.5``, not ``0.50000000``."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


DEFAULT_CONFIG: dict[str, Any] = {
    "assets": {
        "BTC": {
            "decimals": 8,
            "network": "BTC",
            "withdraw_fee": "0.0002",
            "withdraw_min": "0.001",
            "faucet_amount": "1",
            "address_pattern": r"(bc1[02-9ac-hj-np-z]{11,71}|[13][1-9A-HJ-NP-Za-km-z]{25,34})",
        },
        "ETH": {
            "decimals": 8,
            "network": "ETH",
            "withdraw_fee": "0.001",
            "withdraw_min": "0.01",
            "faucet_amount": "10",
            "address_pattern": r"0x[0-9a-fA-F]{40}",
        },
        "USDT": {
            "decimals": 8,
            "network": "ETH",
            "withdraw_fee": "1",
            "withdraw_min": "10",
            "faucet_amount": "10000",
            "address_pattern": r"0x[0-9a-fA-F]{40}",
        },
    },
    "markets": {
        "BTCUSDT": {"base": "BTC", "quote": "USDT", "tick_size": "0.01", "step_size": "0.00001",
                    "min_notional": "5", "max_qty": "9000", "max_price": "1000000"},
        "ETHUSDT": {"base": "ETH", "quote": "USDT", "tick_size": "0.01", "step_size": "0.0001",
                    "min_notional": "5", "max_qty": "90000", "max_price": "1000000"},
        "ETHBTC": {"base": "ETH", "quote": "BTC", "tick_size": "0.00001", "step_size": "0.001",
                   "min_notional": "0.0001", "max_qty": "100000", "max_price": "1000"},
    },
}  # fmt: skip


def _dec(entry: dict[str, Any], name: str, where: str, default: str | None = None) -> Decimal:
    value = entry.get(name, default)
    if value is None:
        raise MarketConfigError(f"{where}: {name} is required")
    try:
        out = Decimal(str(value))
    except InvalidOperation as e:
        raise MarketConfigError(f"{where}: {name} must be a decimal, got {value!r}") from e
    if not out.is_finite() or out < 0:
        raise MarketConfigError(f"{where}: {name} must be a non-negative decimal, got {value!r}")
    return out


def _units(asset: Asset, value: Decimal, where: str) -> int:
    scaled = value.scaleb(asset.decimals)
    if scaled != scaled.to_integral_value():
        raise MarketConfigError(f"{where}: {value} has more than {asset.decimals} decimals for {asset.name}")
    return int(scaled)


def build_assets(doc: dict[str, Any]) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    for name, entry in doc.items():
        where = f"assets.{name}"
        decimals = int(entry.get("decimals", 8))
        if not 0 <= decimals <= 18:
            raise MarketConfigError(f"{where}: decimals must be 0..18")
        base = Asset(name=name, decimals=decimals)
        pattern = str(entry.get("address_pattern", base.address_pattern))
        try:
            re.compile(pattern)
        except re.error as e:
            raise MarketConfigError(f"{where}: address_pattern is not a regular expression") from e
        assets[name] = replace(
            base,
            network=str(entry.get("network", name)),
            withdraw_fee=_units(base, _dec(entry, "withdraw_fee", where, "0"), where),
            withdraw_min=_units(base, _dec(entry, "withdraw_min", where, "0"), where),
            faucet_amount=_units(base, _dec(entry, "faucet_amount", where, "0"), where),
            address_pattern=pattern,
        )
    return assets


def build_markets(doc: dict[str, Any], assets: dict[str, Asset]) -> dict[str, Market]:
    markets: dict[str, Market] = {}
    for symbol, entry in doc.items():
        where = f"markets.{symbol}"
        if not re.fullmatch(r"[A-Z0-9]{2,20}", symbol):
            raise MarketConfigError(f"{where}: a symbol is 2-20 upper-case letters and digits")
        try:
            base, quote = assets[entry["base"]], assets[entry["quote"]]
        except KeyError as e:
            raise MarketConfigError(f"{where}: base and quote must name configured assets") from e
        tick = _units(quote, _dec(entry, "tick_size", where), where)
        step = _units(base, _dec(entry, "step_size", where), where)
        if tick <= 0 or step <= 0:
            raise MarketConfigError(f"{where}: tick_size and step_size must be positive")
        if (tick * step) % base.scale:
            raise MarketConfigError(
                f"{where}: tick_size x step_size must be a whole number of {quote.name} units, so that "
                "every order's notional is exact"
            )
        maker = _dec(entry, "maker_fee", where, "0.001")
        taker = _dec(entry, "taker_fee", where, "0.001")
        if maker >= 1 or taker >= 1:
            raise MarketConfigError(f"{where}: fees are fractions below 1 (0.001 = 0.1%)")
        min_qty = _units(base, _dec(entry, "min_qty", where, str(Decimal(step).scaleb(-base.decimals))), where)
        markets[symbol] = Market(
            symbol=symbol,
            base=base,
            quote=quote,
            tick=tick,
            step=step,
            min_qty=max(min_qty, step),
            max_qty=_units(base, _dec(entry, "max_qty", where, "100000"), where),
            min_price=max(_units(quote, _dec(entry, "min_price", where, "0"), where), tick),
            max_price=_units(quote, _dec(entry, "max_price", where, "1000000"), where),
            min_notional=_units(quote, _dec(entry, "min_notional", where, "0"), where),
            maker_fee=maker,
            taker_fee=taker,
        )
    if not markets:
        raise MarketConfigError("no markets configured")
    return markets


def load_config(path: Path | None) -> tuple[dict[str, Asset], dict[str, Market]]:
    """Assets and markets from a JSON or TOML file (``assets`` and ``markets`` tables), or the
    defaults. A file without an ``assets`` table uses the default assets."""
    doc: dict[str, Any] = DEFAULT_CONFIG
    if path is not None:
        try:
            text = path.read_text("utf-8")
        except OSError as e:
            raise MarketConfigError(f"cannot read markets file {path}: {e.__class__.__name__}") from e
        try:
            doc = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise MarketConfigError(f"markets file {path} is not valid {path.suffix.lstrip('.')}: {e}") from e
    assets = build_assets(doc.get("assets") or DEFAULT_CONFIG["assets"])
    return assets, build_markets(doc.get("markets") or {}, assets)
