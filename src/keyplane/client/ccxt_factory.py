"""A ccxt ``binance`` instance that talks to a keyplane server and nowhere else.

ccxt deep-merges a ``urls`` override into its defaults, so overriding only ``public`` and ``private``
leaves ``sapi`` (withdrawals, deposit history) pointing at the real Binance, with the user's key
(research/clients.md §1.2). This sets every API URL, and the options that keep ``load_markets`` to
one ``exchangeInfo`` call.
"""

from __future__ import annotations

from typing import Any

import ccxt

_API_PATHS = {
    "public": "/api/v3",
    "private": "/api/v3",
    "v1": "/api/v1",
    "v3": "/api/v3",
    "sapi": "/sapi/v1",
    "sapiV2": "/sapi/v2",
    "sapiV3": "/sapi/v3",
    "sapiV4": "/sapi/v4",
}


def keyplane_urls(base_url: str) -> dict[str, str]:
    base = base_url.rstrip("/")
    return {name: base + path for name, path in _API_PATHS.items()}


def ccxt_exchange(base_url: str, api_key: str | None = None, secret: str | None = None, **options: Any) -> Any:
    """A ccxt.binance instance with every URL pointed at ``base_url``.

    Args:
        base_url: the keyplane server, e.g. ``http://127.0.0.1:8000``.
        api_key: the API key (``kp_live_...``); None for public market data only.
        secret: the HMAC secret, or an Ed25519 private key PEM.
        options: extra ccxt options, merged over the safe defaults.

    Every URL in ccxt's ``urls['api']`` that is not a keyplane path is replaced by an address that
    cannot be reached, so no request with the key can go to another exchange.
    """
    urls = keyplane_urls(base_url)
    template = ccxt.binance().urls["api"]
    for name in template:
        urls.setdefault(name, "http://keyplane.invalid/unsupported/" + name)
    config: dict[str, Any] = {
        "urls": {"api": urls},
        "options": {
            "fetchCurrencies": False,
            "fetchMargins": False,
            "fetchMarkets": {"types": ["spot"]},
            "adjustForTimeDifference": True,
            "fetchOpenOrders": {"warnWithoutSymbol": False},
            **options,
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
        config["secret"] = secret
    return ccxt.binance(config)
