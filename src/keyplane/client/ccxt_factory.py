"""A ccxt instance for a keyplane server (a ``binance`` class that talks to it and nowhere else),
or, for a keystore profile of another exchange, that exchange's own ccxt class; in ccxt's three
forms: :func:`ccxt_exchange` (sync), :func:`ccxt_async_exchange` (``ccxt.async_support``) and
:func:`ccxt_pro_exchange` (``ccxt.pro``, with WebSocket URLs).

ccxt deep-merges a ``urls`` override into its defaults, so overriding only ``public`` and ``private``
leaves ``sapi`` (withdrawals, deposit history) pointing at the real Binance, with the user's key
(research/clients.md §1.2), and a copied REST map leaves ccxt.pro's twelve WebSocket URLs there too
(``watch_orders`` would send a signed subscription to Binance). This sets every URL under ``api``
and under ``test`` and ``demo`` (the maps ``set_sandbox_mode`` and ``enable_demo_trading`` swap in),
REST and WebSocket, then
walks the built instance's URLs and refuses it (``ClientError``) if any would leave the keyplane
server; and it sets the options that keep ``load_markets`` to one ``exchangeInfo`` call.

With ccxt's default options ``load_markets`` also calls ``capital/config/getall``, the margin pair
lists and the futures ``exchangeInfo`` calls. keyplane serves each of them (the margin and futures
ones empty: it has only spot markets), so a ccxt instance whose every URL a user pointed at the
server by hand, with no options, works too; and the futures and options ``exchangeInfo`` URLs here
are keyplane's, so ``fetchMarkets={"types": [...]}`` may name ``linear``, ``inverse`` or ``option``.
The factory still leaves ``fetchCurrencies`` off: ``getall`` is a signed ``read`` call, and
``load_markets`` should work for any key, and without one (pass ``fetchCurrencies=True`` to have
ccxt's currencies carry keyplane's networks, fees and withdrawal limits).

A program that builds its own ccxt instances from a config dict (freqtrade's ``ccxt_config`` and
``ccxt_async_config``) takes :func:`ccxt_config`: the same URL maps and options, as a dict.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

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
    # Only their exchangeInfo (no markets): what load_markets asks for futures and options.
    "fapiPublic": "/fapi/v1",
    "dapiPublic": "/dapi/v1",
    "eapiPublic": "/eapi/v1",
}
# ccxt.pro's stream and WebSocket-API URLs for spot, under ``urls['api']['ws']``.
_WS_PATHS = {"spot": "/ws", "ws-api.spot": "/ws-api/v3"}
_NOWHERE = "keyplane.invalid"  # an address that cannot be reached: a URL keyplane does not serve
# The URL maps ccxt sends requests to: ``api``, and the maps that ``set_sandbox_mode`` and
# ``enable_demo_trading`` swap in for it.
_REQUEST_MAPS = ("api", "test", "demo")

Flavour = Literal["sync", "async", "pro"]


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
        ClientError: the profile names an exchange that ccxt does not know, or a URL of the built
            instance would leave the keyplane server.

    For keyplane, every URL in ccxt's ``urls['api']`` (and in the sandbox and demo maps) that is not
    a keyplane path is replaced by an address that cannot be reached, so no request with the key can go to
    another exchange.
    """
    return _build("sync", target, api_key, secret, options)


def ccxt_async_exchange(
    target: str | Profile, api_key: str | None = None, secret: str | None = None, **options: Any
) -> Any:
    """:func:`ccxt_exchange` for ``ccxt.async_support`` (``await ex.fetch_balance()``; close it
    with ``await ex.close()``)."""
    return _build("async", target, api_key, secret, options)


def ccxt_pro_exchange(
    target: str | Profile, api_key: str | None = None, secret: str | None = None, **options: Any
) -> Any:
    """:func:`ccxt_exchange` for ``ccxt.pro`` (``watch_*``): its WebSocket URLs too point at the
    keyplane server (``ws[s]://host/ws`` for streams, ``/ws-api/v3`` for the WebSocket API) or at
    an address that cannot be reached, never at another exchange."""
    return _build("pro", target, api_key, secret, options)


def _module(flavour: Flavour) -> Any:
    import ccxt  # imported on use: it takes about a second

    if flavour == "async":
        import ccxt.async_support

        return ccxt.async_support
    if flavour == "pro":
        import ccxt.pro

        return ccxt.pro
    return ccxt


def _build(
    flavour: Flavour, target: str | Profile, api_key: str | None, secret: str | None, options: dict[str, Any]
) -> Any:
    if not isinstance(target, Profile):
        return _keyplane(flavour, target, api_key, secret, **options)
    if target.is_keyplane:
        key = target.api_key.reveal() if target.api_key else None
        return _keyplane(flavour, target.url, key, target.signing_secret, **options)
    return _for_profile(flavour, target, **options)


def _for_profile(flavour: Flavour, profile: Profile, **options: Any) -> Any:
    import ccxt

    cls = getattr(_module(flavour), profile.exchange, None)
    if not isinstance(cls, type) or profile.exchange not in ccxt.exchanges:
        raise ClientError(f"unknown exchange {profile.exchange!r} in profile {profile.name!r} (not a ccxt exchange id)")
    config: dict[str, Any] = {"enableRateLimit": True, "options": dict(options)}
    if profile.api_key is not None:
        config["apiKey"] = profile.api_key.reveal()
        config["secret"] = profile.signing_secret
    if profile.password is not None:
        config["password"] = profile.password.reveal()
    return cls(config)


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def _pointed(template: Mapping[str, Any], base: str, prefix: str = "") -> dict[str, Any]:
    """``template`` (a ccxt URL map) with every URL at keyplane: a keyplane path at ``base``, the
    WebSocket ones at its ``ws[s]`` form, anything else at an address that cannot be reached."""
    ws_base = "ws" + base[len("http") :] if base.startswith("http") else base
    out: dict[str, Any] = {}
    for name, value in template.items():
        where = prefix + name
        if isinstance(value, Mapping):
            out[name] = _pointed(value, base, f"{where}.")
        elif where in _API_PATHS:
            out[name] = base + _API_PATHS[where]
        elif where.startswith("ws.") and where[3:] in _WS_PATHS:
            out[name] = ws_base + _WS_PATHS[where[3:]]
        else:
            scheme = "ws" if where.startswith("ws.") else "http"
            out[name] = f"{scheme}://{_NOWHERE}/unsupported/{where}"
    return out


def ccxt_config(base_url: str, **options: Any) -> dict[str, Any]:
    """The constructor config of a ccxt ``binance`` instance (sync, async or pro) that talks to the
    keyplane server at ``base_url`` and nowhere else: ``{"urls": ..., "options": ...}``, plain JSON,
    for a program that builds its own ccxt instances from a config (freqtrade's
    ``exchange.ccxt_config`` and ``exchange.ccxt_async_config``). It holds no key: the program adds
    its own ``apiKey`` and ``secret``.

    The URL maps are ccxt.pro's, a superset of the sync and async ones, so one config serves all
    three forms: REST and WebSocket URLs at the server, every other one at an address that cannot be
    reached. The options are those of :func:`ccxt_exchange`.

    Args:
        base_url: the keyplane server, e.g. ``http://127.0.0.1:8000``.
        options: extra ccxt options, merged over the safe defaults.

    Raises:
        ClientError: ``base_url`` is not an http(s) URL with a host, or a URL of an instance built
            from the config would leave the server.
    """
    base, host = _server(base_url)
    config = _config(_module("pro").binance, base, options)
    # ccxt deep-merges ``urls`` into its defaults: check what a built instance would use.
    _refuse_leaving("pro", _module("pro").binance(config), host)
    return config


def _server(base_url: str) -> tuple[str, str]:
    base = base_url.rstrip("/")
    host = urlsplit(base).hostname
    if urlsplit(base).scheme not in ("http", "https") or not host:
        raise ClientError(f"a keyplane server URL is http:// or https:// and a host, got {base_url!r}")
    return base, host


def _config(cls: Any, base: str, options: Mapping[str, Any]) -> dict[str, Any]:
    defaults = cls().urls
    return {
        # The sandbox and demo maps as the live one (keyplane has one surface), over their own keys.
        "urls": {part: _pointed({**(defaults.get(part) or {}), **defaults["api"]}, base) for part in _REQUEST_MAPS},
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


def _refuse_leaving(flavour: Flavour, exchange: Any, host: str) -> None:
    for part in _REQUEST_MAPS:
        for where, url in _leaves(exchange.urls.get(part) or {}):
            if isinstance(url, str) and urlsplit(url).hostname not in (host, _NOWHERE):
                raise ClientError(
                    f"refusing to build a ccxt {flavour} exchange for keyplane: urls.{part}.{where} would send "
                    f"requests (and the key) to {urlsplit(url).hostname}"
                )


def _keyplane(flavour: Flavour, base_url: str, api_key: str | None, secret: str | None, **options: Any) -> Any:
    cls = _module(flavour).binance
    base, host = _server(base_url)
    config = _config(cls, base, options)
    if api_key is not None:
        config["apiKey"] = api_key
        config["secret"] = secret
    exchange = cls(config)
    _refuse_leaving(flavour, exchange, host)
    return exchange
