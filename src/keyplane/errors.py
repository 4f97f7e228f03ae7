"""The root of every keyplane error.

Each domain has its own ``errors.py`` whose base subclasses :class:`KeyplaneError`. An error carries
a stable wire code (``code``, a short snake_case string), an HTTP status and, for the Binance-compatible
surface, the Binance integer code that makes ccxt raise the right exception. One handler renders
them (``keyplane.api.errors``).

Messages never contain a secret: they name keys by their public id only.
"""

from __future__ import annotations


class KeyplaneError(Exception):
    code: str = "error"
    status: int = 400
    binance_code: int = -1000

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class NotFound(KeyplaneError):
    code = "not_found"
    status = 404


class Conflict(KeyplaneError):
    code = "conflict"
    status = 409


class InvalidInput(KeyplaneError):
    """Bad input from a user; ``field`` names the form field it concerns, when there is one."""

    code = "invalid_input"
    status = 400
    binance_code = -1102

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OutsideRecvWindow(KeyplaneError):
    """A signed request's time window is closed: it arrived (or reached the point where it would
    be applied) outside its ``timestamp`` ± ``recvWindow``. The authenticator raises it on arrival,
    the exchange again at the last moment before a write; ccxt raises InvalidNonce for -1021."""

    code = "timestamp_outside_window"
    status = 400
    binance_code = -1021


class ServiceUnavailable(KeyplaneError):
    """A dependency (database, Redis) is down. Signed requests fail closed with this."""

    code = "service_unavailable"
    status = 503
    binance_code = -1001
