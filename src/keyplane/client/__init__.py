"""The holder side's client library: it talks HTTP like any third-party tool and imports nothing
from the server packages."""

from __future__ import annotations

from keyplane.client.ccxt_factory import ccxt_exchange

__all__ = ["ccxt_exchange"]
