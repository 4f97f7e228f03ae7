"""Binance request parameters to validated values: a new order, an order reference, a time window.

Pure functions over the ``dict[str, str]`` the signed-request middleware already parsed, raising
the Binance error for each kind of bad input (see ``errors.py``).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, replace

from keyplane import parsing
from keyplane.exchange.errors import BadParameter, FilterFailure, IllegalCharacters, NotRequired, UnknownSymbol
from keyplane.exchange.markets import Asset, Market, to_units

_CLIENT_ID_RE = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
# Binance's own rule for ``symbols``, quoted in its error message.
_SYMBOLS_RULE = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_SYMBOLS_RE = re.compile(r'\[\s*("[A-Za-z0-9._-]{1,20}"\s*(,\s*"[A-Za-z0-9._-]{1,20}"\s*)*)?\]', re.ASCII)
_SYMBOL_RE = re.compile(r'"([A-Za-z0-9._-]{1,20})"', re.ASCII)
_MAX_SYMBOLS = 100
ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")
# A conditional order waits for its trigger, then works as the plain type it names here.
CONDITIONAL = {"STOP_LOSS": "MARKET", "TAKE_PROFIT": "MARKET", "STOP_LOSS_LIMIT": "LIMIT", "TAKE_PROFIT_LIMIT": "LIMIT"}
# Binance's TRAILING_DELTA filter: the trailing delta in basis points, for either direction.
TRAILING_DELTA = (10, 2000)
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
    for name in names:
        if name.upper() not in markets:
            raise UnknownSymbol(name)
    return [markets[symbol] for symbol in dict.fromkeys(name.upper() for name in names)]


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


@dataclass(frozen=True, slots=True)
class NewOrder:
    market: Market
    side: str
    type: str
    tif: str
    price: int  # 0 for market orders
    qty: int | None  # None: a market order by quote amount
    quote_qty: int
    client_id: str
    stp: str
    resp_type: str
    stop_price: int = 0  # a conditional order's trigger (or trailing activation) price; 0: none
    trailing_delta: int = 0  # a trailing order's delta in basis points; 0: none

    @property
    def working_type(self) -> str:
        """What the order works as once it works: a conditional order's plain type, else its own."""
        return CONDITIONAL.get(self.type, self.type)

    @property
    def limit(self) -> int | None:
        return None if self.working_type == "MARKET" else self.price

    @property
    def conditional(self) -> bool:
        return self.type in CONDITIONAL

    def triggered(self) -> NewOrder:
        """The order as it works once its trigger fired."""
        return replace(self, type=self.working_type, stop_price=0, trailing_delta=0)


def _check_range(
    filter_name: str, what: str, text: str, value: int, bounds: tuple[int, int, int], step_name: str, asset: Asset
) -> None:
    """FilterFailure unless ``value`` is within ``bounds`` (minimum, maximum, and the step it is a multiple of)."""
    lo, hi, step = bounds
    if value < lo:
        detail = f"is below the minimum {asset.plain(lo)}"
    elif value > hi:
        detail = f"is above the maximum {asset.plain(hi)}"
    elif value % step:
        detail = f"is not a multiple of the {step_name} {asset.plain(step)}"
    else:
        return
    raise FilterFailure(filter_name, f"{what} {text} {detail}")


def _check_qty(market: Market, qty: int, text: str) -> None:
    _check_range(
        "LOT_SIZE", "quantity", text, qty, (market.min_qty, market.max_qty, market.step), "step size", market.base
    )


def check_notional(market: Market, notional: int) -> None:
    if notional < market.min_notional:
        raise FilterFailure(
            "NOTIONAL",
            f"order value {market.quote.plain(notional)} {market.quote.name} is below the minimum notional "
            f"{market.quote.plain(market.min_notional)} {market.quote.name}",
        )


def parse_new_order(params: dict[str, str], markets: dict[str, Market]) -> NewOrder:
    market = market_of(params, markets)
    side = mandatory(params, "side").upper()
    if side not in ("BUY", "SELL"):
        raise BadParameter(f"Invalid side {side[:10]!r}: use BUY or SELL.")
    otype = mandatory(params, "type").upper()
    if otype not in ORDER_TYPES:
        raise BadParameter(f"Invalid orderType {otype[:20]!r}: this exchange supports {', '.join(ORDER_TYPES)}.")
    client_id = text_param(params, "newClientOrderId") or "kp" + secrets.token_hex(11)
    if not _CLIENT_ID_RE.fullmatch(client_id):
        raise BadParameter("Parameter 'newClientOrderId' must be 1-36 characters of letters, digits and . : / _ -")
    stp = text_param(params, "selfTradePreventionMode", "EXPIRE_TAKER").upper()
    if stp not in STP_MODES:
        raise BadParameter(f"Invalid selfTradePreventionMode {stp[:20]!r}: use {' or '.join(STP_MODES)}.")
    resp_type = text_param(params, "newOrderRespType", "FULL").upper()
    if resp_type not in ("ACK", "RESULT", "FULL"):
        raise BadParameter(f"Invalid newOrderRespType {resp_type[:10]!r}: use ACK, RESULT or FULL.")
    stop_price, trailing_delta = _trigger_params(params, market, otype)
    tif = "GTC"
    price = 0
    qty: int | None = None
    quote_qty = 0
    if otype in ("STOP_LOSS", "TAKE_PROFIT"):
        if params.get("quoteOrderQty"):
            raise NotRequired(
                f"Parameter 'quoteOrderQty' sent when not required: a {otype} order is sized by 'quantity'."
            )
        text = mandatory(params, "quantity")
        qty = to_units(text, "quantity", market.base)
        _check_qty(market, qty, text)
        if stop_price:
            check_notional(market, market.notional(qty, stop_price))
    elif otype == "MARKET":
        if params.get("quantity") and params.get("quoteOrderQty"):
            raise BadParameter("Send either 'quantity' or 'quoteOrderQty' for a MARKET order, not both.")
        if params.get("quoteOrderQty"):  # a buy spends it; a sell sells as much as brings it in
            quote_qty = to_units(params["quoteOrderQty"], "quoteOrderQty", market.quote)
            check_notional(market, quote_qty)
        else:
            text = mandatory(params, "quantity")
            qty = to_units(text, "quantity", market.base)
            _check_qty(market, qty, text)
    else:
        if otype in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"):
            tif = mandatory(params, "timeInForce").upper()
            if tif not in ("GTC", "IOC", "FOK"):
                raise BadParameter(f"Invalid timeInForce {tif[:10]!r}: use GTC, IOC or FOK.")
        ptext, qtext = mandatory(params, "price"), mandatory(params, "quantity")
        price = to_units(ptext, "price", market.quote)
        qty = to_units(qtext, "quantity", market.base)
        bounds = (market.min_price, market.max_price, market.tick)
        _check_range("PRICE_FILTER", "price", ptext, price, bounds, "tick size", market.quote)
        _check_qty(market, qty, qtext)
        check_notional(market, market.notional(qty, price))
    return NewOrder(
        market, side, otype, tif, price, qty, quote_qty, client_id, stp, resp_type, stop_price, trailing_delta
    )


def _trigger_params(params: dict[str, str], market: Market, otype: str) -> tuple[int, int]:
    """``stopPrice`` and ``trailingDelta`` of a conditional order (it needs one or both); a plain
    order that sends either is refused (-1106), as on Binance."""
    stop_text, delta_text = params.get("stopPrice", ""), params.get("trailingDelta", "")
    if otype not in CONDITIONAL:
        for name, text in (("stopPrice", stop_text), ("trailingDelta", delta_text)):
            if text != "":
                raise NotRequired(f"Parameter '{name}' sent when not required: a {otype} order has no trigger.")
        return 0, 0
    if stop_text == "" and delta_text == "":
        raise BadParameter(f"A {otype} order needs 'stopPrice', 'trailingDelta' or both.")
    stop_price = 0
    if stop_text != "":
        stop_price = to_units(stop_text, "stopPrice", market.quote)
        bounds = (market.min_price, market.max_price, market.tick)
        _check_range("PRICE_FILTER", "stopPrice", stop_text, stop_price, bounds, "tick size", market.quote)
    trailing_delta = int_param(params, "trailingDelta", 0) or 0
    lo, hi = TRAILING_DELTA
    if delta_text != "" and not lo <= trailing_delta <= hi:
        raise FilterFailure("TRAILING_DELTA", f"trailingDelta {trailing_delta} is outside {lo} to {hi} basis points")
    return stop_price, trailing_delta


# -- market data and history queries ------------------------------------------------------------
# The three refusals below are Binance's own codes for these cases; each is a BadParameter (a
# caller that catches that still catches them). They belong in errors.py's tree: they are here
# only until that file's owner moves them.


class BadInterval(BadParameter):
    code = "bad_interval"
    binance_code = -1120


class WindowTooLong(BadParameter):
    code = "window_too_long"
    binance_code = -1127


class BadCombination(BadParameter):
    code = "bad_parameter_combination"
    binance_code = -1128


def time_window(params: dict[str, str], max_hours: int | None = None) -> tuple[int | None, int | None]:
    """``startTime`` and ``endTime`` (epoch ms, each optional); WindowTooLong if both are sent and
    lie more than ``max_hours`` apart (Binance's -1127)."""
    start, end = int_param(params, "startTime"), int_param(params, "endTime")
    if max_hours is not None and start is not None and end is not None and end - start > max_hours * 3_600_000:
        raise WindowTooLong(f"More than {max_hours} hours between startTime and endTime.")
    return start, end


def choice_param(params: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    """An enum parameter, spelled exactly as Binance spells its values (they are case-sensitive)."""
    value = text_param(params, name, default)
    if value not in choices:
        raise BadParameter(f"Invalid {name} {value[:16]!r}: use {' or '.join(choices)}.")
    return value


def interval_param(params: dict[str, str], intervals: tuple[str, ...]) -> str:
    """A kline ``interval`` (mandatory; case-sensitive: ``1m`` is a minute, ``1M`` a month)."""
    interval = params.get("interval", "")
    if interval == "":
        raise BadParameter("Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
    if interval not in intervals:
        raise BadInterval(f"Invalid interval {interval[:8]!r}: use one of {', '.join(intervals)}.")
    return interval


# Binance's timeZone values: hours, or hours and minutes, between -12:00 and +14:00.
_TIME_ZONE_RE = re.compile(r"([+-]?)(\d{1,2})(?::(\d{2}))?", re.ASCII)


def utc_time_zone(params: dict[str, str]) -> None:
    """Accept an absent ``timeZone`` or one that names UTC ("0", "+00:00"...); refuse any other
    (-1100): this exchange builds klines and trading days in UTC only."""
    raw = params.get("timeZone", "")
    if raw == "":
        return
    m = _TIME_ZONE_RE.fullmatch(raw) if len(raw) <= 6 else None
    if m is None:
        raise IllegalCharacters(
            "Illegal characters found in parameter 'timeZone'; legal range is hours or hours:minutes "
            "from -12:00 to +14:00 (e.g. 0, 8, -1:00, 05:45)."
        )
    if int(m[2]) or int(m[3] or 0):
        raise IllegalCharacters(
            f"Unsupported timeZone {raw!r}: this exchange answers in UTC only; send timeZone=0 or leave it out."
        )


_WINDOW_RE = re.compile(r"([1-9]\d?)([mhd])", re.ASCII)
_WINDOW_UNITS = {"m": (60_000, 59), "h": (3_600_000, 23), "d": (86_400_000, 7)}


def window_size_param(params: dict[str, str]) -> int:
    """The rolling ticker's ``windowSize`` in ms: 1m..59m, 1h..23h or 1d..7d; 1d when absent."""
    raw = params.get("windowSize", "") or "1d"
    m = _WINDOW_RE.fullmatch(raw) if len(raw) <= 3 else None
    if m is not None:
        unit_ms, most = _WINDOW_UNITS[m[2]]
        if int(m[1]) <= most:
            return int(m[1]) * unit_ms
    raise BadParameter(f"Invalid windowSize {raw[:16]!r}: use 1m to 59m, 1h to 23h, or 1d to 7d.")


# -- order lists (OCO) --------------------------------------------------------------------------

# The legs an OCO may have, by side: the one priced above the market and the one below. A sell
# takes profit above and stops its loss below; a buy stops above and takes profit below.
_OCO_LEGS = {
    "SELL": (("LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"), ("STOP_LOSS", "STOP_LOSS_LIMIT")),
    "BUY": (("STOP_LOSS", "STOP_LOSS_LIMIT"), ("LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")),
}


@dataclass(frozen=True, slots=True)
class NewOrderList:
    """An OCO: two orders of one side and quantity, one priced above the market, one below."""

    market: Market
    side: str
    below: NewOrder
    above: NewOrder
    client_list_id: str
    resp_type: str


def _client_id(params: dict[str, str], name: str) -> str:
    value = text_param(params, name) or "kp" + secrets.token_hex(11)
    if not _CLIENT_ID_RE.fullmatch(value):
        raise BadParameter(f"Parameter '{name}' must be 1-36 characters of letters, digits and . : / _ -")
    return value


def parse_oco(params: dict[str, str], markets: dict[str, Market]) -> NewOrderList:
    """``POST /api/v3/orderList/oco``: ``aboveType``/``belowType`` and each leg's ``*Price``,
    ``*StopPrice``, ``*TrailingDelta``, ``*TimeInForce`` and ``*ClientOrderId``. Each leg is
    checked as the order it is (filters, prices, trigger parameters), by the same parser as a
    single order."""
    market = market_of(params, markets)
    side = mandatory(params, "side").upper()
    if side not in _OCO_LEGS:
        raise BadParameter(f"Invalid side {side[:10]!r}: use BUY or SELL.")
    legs = []
    for where, allowed in zip(("above", "below"), _OCO_LEGS[side], strict=True):
        otype = mandatory(params, f"{where}Type").upper()
        if otype not in allowed:
            raise BadParameter(f"Invalid {where}Type {otype[:20]!r} for a {side} OCO: use {' or '.join(allowed)}.")
        leg = {"symbol": market.symbol, "side": side, "type": otype, "quantity": params.get("quantity", "")}
        for suffix, name in (("Price", "price"), ("StopPrice", "stopPrice"), ("TrailingDelta", "trailingDelta"),
                             ("TimeInForce", "timeInForce"), ("ClientOrderId", "newClientOrderId")):  # fmt: skip
            if params.get(where + suffix, "") != "":
                leg[name] = params[where + suffix]
        for name in ("selfTradePreventionMode", "newOrderRespType"):
            if params.get(name, "") != "":
                leg[name] = params[name]
        legs.append(parse_new_order(leg, markets))
    above, below = legs
    if above.client_id == below.client_id:
        raise BadParameter("The two orders of an order list need different client order ids.")
    resp_type = above.resp_type
    return NewOrderList(market, side, below, above, _client_id(params, "listClientOrderId"), resp_type)


def parse_legacy_oco(params: dict[str, str], markets: dict[str, Market]) -> NewOrderList:
    """``POST /api/v3/order/oco`` (Binance's earlier OCO endpoint): a LIMIT_MAKER at ``price`` and
    a stop at ``stopPrice`` (a STOP_LOSS_LIMIT at ``stopLimitPrice`` when that is sent, else a
    STOP_LOSS), as :func:`parse_oco` takes them."""
    side = mandatory(params, "side").upper()
    if side not in _OCO_LEGS:
        raise BadParameter(f"Invalid side {side[:10]!r}: use BUY or SELL.")
    limit_at, stop_at = ("above", "below") if side == "SELL" else ("below", "above")
    out = {k: v for k, v in params.items() if k in ("symbol", "quantity", "listClientOrderId",
                                                   "selfTradePreventionMode", "newOrderRespType")}  # fmt: skip
    out["side"] = side
    out[f"{limit_at}Type"] = "LIMIT_MAKER"
    out[f"{limit_at}Price"] = mandatory(params, "price")
    if params.get("limitClientOrderId"):
        out[f"{limit_at}ClientOrderId"] = params["limitClientOrderId"]
    out[f"{stop_at}StopPrice"] = params.get("stopPrice", "")
    if params.get("trailingDelta"):
        out[f"{stop_at}TrailingDelta"] = params["trailingDelta"]
    if params.get("stopLimitPrice"):
        out[f"{stop_at}Type"] = "STOP_LOSS_LIMIT"
        out[f"{stop_at}Price"] = params["stopLimitPrice"]
        out[f"{stop_at}TimeInForce"] = mandatory(params, "stopLimitTimeInForce")
    else:
        out[f"{stop_at}Type"] = "STOP_LOSS"
    if params.get("stopClientOrderId"):
        out[f"{stop_at}ClientOrderId"] = params["stopClientOrderId"]
    return parse_oco(out, markets)
