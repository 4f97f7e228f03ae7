"""Why the exchange refused a request. Each class carries the Binance code and message that make
ccxt raise the matching exception (research/clients.md §1.4).

    ExchangeError (KeyplaneError)
    ├── UnknownSymbol            -1121 "Invalid symbol."                        -> BadSymbol
    ├── BadParameter             -1102 missing or malformed parameter           -> BadRequest
    │   └── NotRequired          -1106 a parameter this order type does not take -> BadRequest
    ├── IllegalCharacters        -1100 negative or non-numeric amount           -> BadRequest
    ├── TooPrecise               -1111 more decimals than the asset has          -> BadRequest
    ├── FilterFailure            -1013 "Filter failure: PRICE_FILTER|LOT_SIZE"  -> InvalidOrder
    │                                  "Filter failure: NOTIONAL"               -> BadRequest
    ├── OrderRejected            -2010                                          -> InvalidOrder
    │   ├── InsufficientBalance        exact Binance text                       -> InsufficientFunds
    │   ├── DuplicateOrder             "Duplicate order sent."
    │   ├── WouldTakeLiquidity         LIMIT_MAKER that would cross             -> OrderImmediatelyFillable
    │   ├── WouldTrigger               a stop already met by the last trade      -> OrderImmediatelyFillable
    │   └── KeyLimitExceeded           over a key's max notional / daily cap    -> PermissionDenied
    ├── OrderNotFound            -2013 "Order does not exist."                  -> OrderNotFound
    ├── OrderListNotFound        -2013 "Order list does not exist."             -> OrderNotFound
    ├── CancelRejected           -2011 unknown or already final order           -> OrderNotFound
    ├── InvalidCancelRestrictions -1145 "Invalid cancelRestrictions"            -> BadRequest
    ├── CancelReplaceFailed      -2022 "Order cancel-replace failed." (+ data)  -> ExchangeError
    │   └── CancelReplacePartiallyFailed -2021 "... partially failed." (409)    -> ExchangeError
    │                                  (BadResponse on binance.com hosts, where ccxt reads its spot table)
    ├── InvalidAddress           -1102 malformed or not allowlisted address     -> BadRequest
    └── WithdrawRefused          -4026-style refusals (minimum amount, coin)    -> BadRequest
"""

from __future__ import annotations

from keyplane.errors import KeyplaneError


class ExchangeError(KeyplaneError):
    code = "exchange_error"
    status = 400
    binance_code = -1000
    default_message = ""  # the Binance text of an error raised without a message of its own

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.default_message)


class UnknownSymbol(ExchangeError):
    code = "unknown_symbol"
    binance_code = -1121

    def __init__(self, symbol: str) -> None:
        # ccxt matches the exact Binance text first; the symbol is in ``reason`` and the docs.
        super().__init__("Invalid symbol.")
        self.symbol = symbol


class BadParameter(ExchangeError):
    code = "bad_parameter"
    binance_code = -1102


class NotRequired(BadParameter):
    code = "parameter_not_required"
    binance_code = -1106


class IllegalCharacters(ExchangeError):
    code = "illegal_characters"
    binance_code = -1100


class TooPrecise(ExchangeError):
    code = "too_precise"
    binance_code = -1111


class FilterFailure(ExchangeError):
    code = "filter_failure"
    binance_code = -1013

    def __init__(self, filter_name: str, detail: str) -> None:
        super().__init__(f"Filter failure: {filter_name} ({detail})")
        self.filter_name = filter_name


class OrderRejected(ExchangeError):
    code = "order_rejected"
    binance_code = -2010


class InsufficientBalance(OrderRejected):
    code = "insufficient_balance"
    default_message = "Account has insufficient balance for requested action."


class DuplicateOrder(OrderRejected):
    code = "duplicate_order"
    default_message = "Duplicate order sent."


class WouldTakeLiquidity(OrderRejected):
    code = "would_take_liquidity"
    default_message = "Order would immediately match and take."


class WouldTrigger(OrderRejected):
    """A conditional order whose stop price the market has already reached (Binance refuses it
    rather than firing it at once)."""

    code = "would_trigger"
    default_message = "Stop price would trigger immediately."


class KeyLimitExceeded(OrderRejected):
    """A per-key restriction (max notional, daily withdrawal cap). The message contains "has no
    operation privilege", which ccxt maps to PermissionDenied."""

    code = "key_limit_exceeded"
    status = 403


class OrderNotFound(ExchangeError):
    code = "order_not_found"
    binance_code = -2013
    default_message = "Order does not exist."


class OrderListNotFound(ExchangeError):
    code = "order_list_not_found"
    binance_code = -2013
    default_message = "Order list does not exist."


class CancelRejected(ExchangeError):
    code = "cancel_rejected"
    binance_code = -2011


class InvalidAddress(ExchangeError):
    code = "invalid_address"
    binance_code = -1102


class WithdrawRefused(ExchangeError):
    code = "withdraw_refused"
    binance_code = -4026


class InvalidCancelRestrictions(ExchangeError):
    code = "invalid_cancel_restrictions"
    binance_code = -1145
    default_message = "Invalid cancelRestrictions"


class CancelReplaceFailed(ExchangeError):
    """``POST /api/v3/order/cancelReplace`` did neither half: the cancel failed and the new order
    failed or was not attempted. ``data`` is Binance's account of each half (``cancelResult``,
    ``newOrderResult``, ``cancelResponse``, ``newOrderResponse``), rendered beside code and msg."""

    code = "cancel_replace_failed"
    binance_code = -2022
    default_message = "Order cancel-replace failed."

    def __init__(self, data: dict[str, object]) -> None:
        super().__init__()
        self.data = data


class CancelReplacePartiallyFailed(CancelReplaceFailed):
    """One half of a cancel-replace succeeded and the other failed (HTTP 409, as on Binance)."""

    code = "cancel_replace_partially_failed"
    status = 409
    binance_code = -2021
    default_message = "Order cancel-replace partially failed."
