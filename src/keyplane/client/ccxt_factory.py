"""A ccxt instance for a keyplane server (a ``binance`` class that talks to it and nowhere else),
or, for a keystore profile of another exchange, that exchange's own ccxt class.

ccxt deep-merges a ``urls`` override into its defaults, so overriding only ``public`` and ``private``
leaves ``sapi`` (withdrawals, deposit history) pointing at the real Binance, with the user's key
(research/clients.md §1.2). This sets every API URL, and the options that keep ``load_markets`` to
one ``exchangeInfo`` call.
"""

from __future__ import annotations

from typing import Any

from keyplane.client.errors import ClientError
from keyplane.client.profile import Profile

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


def ccxt_exchange(target: str | Profile, api_key: str | None = None, secret: str | None = None, **options: Any) -> Any:
    """A ccxt exchange for a keyplane server URL or for a keystore profile.

    Args:
        target: the keyplane server (e.g. ``http://127.0.0.1:8000``), or a ``Profile``. A profile of
            exchange ``keyplane`` points every URL at its ``base_url``; any other profile builds
            ``getattr(ccxt, profile.exchange)`` with the user's key and ccxt's own URLs.
        api_key: with a URL, the API key (``kp_live_...``); None for public market data only.
        secret: with a URL, the HMAC secret or an Ed25519 private key PEM.
        options: extra ccxt options, merged over the safe defaults.

    Raises:
        ClientError: the profile names an exchange that ccxt does not know.

    For keyplane, every URL in ccxt's ``urls['api']`` that is not a keyplane path is replaced by an
    address that cannot be reached, so no request with the key can go to another exchange.
    """
    if isinstance(target, Profile):
        return _for_profile(target, **options)
    return _keyplane(target, api_key, secret, **options)


def _for_profile(profile: Profile, **options: Any) -> Any:
    import ccxt  # imported on use: it takes about a second

    key = profile.api_key.reveal() if profile.api_key else None
    if profile.is_keyplane:
        return _keyplane(profile.url, key, profile.signing_secret, **options)
    cls = getattr(ccxt, profile.exchange, None)
    if not isinstance(cls, type) or profile.exchange not in ccxt.exchanges:
        raise ClientError(f"unknown exchange {profile.exchange!r} in profile {profile.name!r} (not a ccxt exchange id)")
    config: dict[str, Any] = {"enableRateLimit": True, "options": dict(options)}
    if key is not None:
        config["apiKey"] = key
        config["secret"] = profile.signing_secret
    if profile.password is not None:
        config["password"] = profile.password.reveal()
    return cls(config)


def _keyplane(base_url: str, api_key: str | None, secret: str | None, **options: Any) -> Any:
    import ccxt

    urls = {name: base_url.rstrip("/") + path for name, path in _API_PATHS.items()}
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
            # Not a ccxt option: tells the holder apps this is a keyplane server (whose history
            # endpoints accept a startTime without an endTime, see apps/tax/sync.py).
            "keyplaneServer": True,
            **options,
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
        config["secret"] = secret
    return ccxt.binance(config)
