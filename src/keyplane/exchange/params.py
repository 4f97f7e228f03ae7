"""Binance request parameters to validated values: a new order, an order reference, a time window.

Pure functions over the ``dict[str, str]`` the signed-request middleware already parsed, raising
the Binance error for each kind of bad input (see ``errors.py``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from decimal import Decimal

from keyplane import parsing
from keyplane.exchange.errors import BadParameter, FilterFailure, IllegalCharacters, UnknownSymbol
from keyplane.exchange.markets import Market, parse_number, plain, to_units

_CLIENT_ID_RE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
# Binance's own rule for ``symbols``, quoted in its error message.
_SYMBOLS_RULE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_SYMBOLS_RE = re.compile(r'\[\s*("[A-Za-z0-9._-]{1,20}"\s*(,\s*"[A-Za-z0-9._-]{1,20}"\s*)*)?\]', re.ASCII)
_SYMBOL_RE = re.compile(r'"([A-Za-z0-9._-]{1,20})"', re.ASCII)
_MAX_SYMBOLS = 100
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET")
STP_MODES = ("EXPIRE_TAKER", "NONE")


def refused(e: parsing.ParseError) -> BadParameter | IllegalCharacters:
    """The Binance error for a value the shared parsers refused: -1100 for characters the
    parameter can never hold, -1102 for a malformed or out-of-range value."""
    message = e.message[0].upper() + e.message[1:] + "."
    return IllegalCharacters(message) if e.illegal else BadParameter(message)


# Most text parameters are short codes; an address tag is stored in a 64-character column.
TEXT_MAX = 64


def text_param(params: dict[str, str], name: str, default: str = "", max_len: int = TEXT_MAX) -> str:
    """A text parameter with no control character, at most ``max_len`` characters."""
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        return parsing.text(raw, name, max_len=max_len)
    except parsing.ParseError as e:
        raise refused(e) from e


def mandatory(params: dict[str, str], name: str, max_len: int = 128) -> str:
    value = text_param(params, name, max_len=max_len)
    if value == "":
        raise BadParameter(f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def market_of(params: dict[str, str], markets: dict[str, Market]) -> Market:
    symbol = mandatory(params, "symbol").upper()
    market = markets.get(symbol)
    if market is None:
        raise UnknownSymbol(symbol)
    return market


def symbols_param(params: dict[str, str], markets: dict[str, Market]) -> list[Market] | None:
    """``symbols=["BTCUSDT","ETHUSDT"]`` as markets (None when absent). Anything but a JSON array of
    symbol strings (a number, ``null``, ``true``, nested arrays) is -1100, as on Binance; a symbol
    this exchange does not list is -1121."""
    raw = params.get("symbols", "")
    if raw == "":
        return None
    if len(raw) > 24 * _MAX_SYMBOLS or not _SYMBOLS_RE.fullmatch(raw):
        raise IllegalCharacters(f"Illegal characters found in parameter 'symbols'; legal range is '{_SYMBOLS_RULE}'.")
    names = _SYMBOL_RE.findall(raw)
    if not names:
        raise BadParameter("Parameter 'symbols' was empty.")
    if len(names) > _MAX_SYMBOLS:
        raise BadParameter(f"Parameter 'symbols' names at most {_MAX_SYMBOLS} symbols; got {len(names)}.")
    out: list[Market] = []
    for name in names:
        market = markets.get(name.upper())
        if market is None:
            raise UnknownSymbol(name)
        if market not in out:
            out.append(market)
    return out


def int_param(
    params: dict[str, str], name: str, default: int | None = None, lo: int = 0, hi: int = parsing.INT64_MAX
) -> int | None:
    """A whole number in ``[lo, hi]`` (ASCII digits; at most a signed 64-bit value), or ``default``."""
    raw = params.get(name, "")
    if raw == "":
        return default
    try:
        return parsing.whole(raw, name, lo=lo, hi=hi)
    except parsing.ParseError as e:
        raise refused(e) from e


def new_client_id() -> str:
    return "kp" + secrets.token_hex(11)


@dataclass(frozen=True, slots=True)
class NewOrder:
    market: Market
    side: str
    type: str
    tif: str
    price: int  # 0 for market orders
    qty: int | None  # None: a market buy by quote amount
    quote_qty: int
    client_id: str
    stp: str
    resp_type: str

    @property
    def limit(self) -> int | None:
        return None if self.type == "MARKET" else self.price


def _p(market: Market, units: int) -> str:
    return plain(Decimal(units).scaleb(-market.quote.decimals))


def _q(market: Market, units: int) -> str:
    return plain(Decimal(units).scaleb(-market.base.decimals))


def _check_price(market: Market, price: int, text: str) -> None:
    if price < market.min_price:
        raise FilterFailure("PRICE_FILTER", f"price {text} is below the minimum {_p(market, market.min_price)}")
    if price > market.max_price:
        raise FilterFailure("PRICE_FILTER", f"price {text} is above the maximum {_p(market, market.max_price)}")
    if price % market.tick:
        raise FilterFailure(
            "PRICE_FILTER", f"price {text} is not a multiple of the tick size {_p(market, market.tick)}"
        )


def _check_qty(market: Market, qty: int, text: str) -> None:
    if qty < market.min_qty:
        raise FilterFailure("LOT_SIZE", f"quantity {text} is below the minimum {_q(market, market.min_qty)}")
    if qty > market.max_qty:
        raise FilterFailure("LOT_SIZE", f"quantity {text} is above the maximum {_q(market, market.max_qty)}")
    if qty % market.step:
        raise FilterFailure("LOT_SIZE", f"quantity {text} is not a multiple of the step size {_q(market, market.step)}")


def check_notional(market: Market, notional: int) -> None:
    if notional < market.min_notional:
        raise FilterFailure(
            "NOTIONAL",
            f"order value {_p(market, notional)} {market.quote.name} is below the minimum notional "
            f"{_p(market, market.min_notional)} {market.quote.name}",
        )


def parse_new_order(params: dict[str, str], markets: dict[str, Market]) -> NewOrder:
    market = market_of(params, markets)
    side = mandatory(params, "side").upper()
    if side not in ("BUY", "SELL"):
        raise BadParameter(f"Invalid side {side[:10]!r}: use BUY or SELL.")
    otype = mandatory(params, "type").upper()
    if otype not in ORDER_TYPES:
        raise BadParameter(f"Invalid orderType {otype[:20]!r}: this exchange supports {', '.join(ORDER_TYPES)}.")
    client_id = text_param(params, "newClientOrderId") or new_client_id()
    if not _CLIENT_ID_RE.fullmatch(client_id):
        raise BadParameter("Parameter 'newClientOrderId' must be 1-36 characters of letters, digits and . : / _ -")
    stp = text_param(params, "selfTradePreventionMode", "EXPIRE_TAKER").upper()
    if stp not in STP_MODES:
        raise BadParameter(f"Invalid selfTradePreventionMode {stp[:20]!r}: use {' or '.join(STP_MODES)}.")
    resp_type = text_param(params, "newOrderRespType", "FULL").upper()
    if resp_type not in ("ACK", "RESULT", "FULL"):
        raise BadParameter(f"Invalid newOrderRespType {resp_type[:10]!r}: use ACK, RESULT or FULL.")
    tif = "GTC"
    price = 0
    qty: int | None = None
    quote_qty = 0
    if otype == "MARKET":
        if params.get("quantity") and params.get("quoteOrderQty"):
            raise BadParameter("Send either 'quantity' or 'quoteOrderQty' for a MARKET order, not both.")
        if params.get("quoteOrderQty"):
            if side != "BUY":
                raise BadParameter("'quoteOrderQty' is supported for MARKET BUY orders; sell by 'quantity'.")
            quote_qty = to_units(params["quoteOrderQty"], "quoteOrderQty", market.quote)
            check_notional(market, quote_qty)
        else:
            text = mandatory(params, "quantity")
            qty = to_units(text, "quantity", market.base)
            _check_qty(market, qty, text)
    else:
        if otype == "LIMIT":
            tif = mandatory(params, "timeInForce").upper()
            if tif not in ("GTC", "IOC", "FOK"):
                raise BadParameter(f"Invalid timeInForce {tif[:10]!r}: use GTC, IOC or FOK.")
        ptext, qtext = mandatory(params, "price"), mandatory(params, "quantity")
        price = to_units(ptext, "price", market.quote)
        qty = to_units(qtext, "quantity", market.base)
        _check_price(market, price, ptext)
        _check_qty(market, qty, qtext)
        check_notional(market, market.notional(qty, price))
    return NewOrder(market, side, otype, tif, price, qty, quote_qty, client_id, stp, resp_type)


def decimal_limit(value: Decimal, market: Market) -> int:
    """A key's max notional (quote asset) in quote units, rounded down. A limit past any 64-bit
    amount (a key stored before limits were bounded) limits nothing, and is never expanded."""
    if value.adjusted() + market.quote.decimals >= 19:
        return parsing.INT64_MAX
    return int(value.scaleb(market.quote.decimals))


def parse_amount(params: dict[str, str], name: str) -> Decimal:
    return parse_number(mandatory(params, name), name)
