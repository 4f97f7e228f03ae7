"""Account and key introspection on the Binance surface, and the account's trading fees (each
market's maker and taker fee from the markets file; keyplane has no fee tiers, discounts or tax)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import run
from keyplane.api.deps import exchange, signed_context
from keyplane.auth.pipeline import AuthContext
from keyplane.auth.routes import signed
from keyplane.exchange.markets import plain
from keyplane.exchange.params import market_of
from keyplane.keys.scopes import Scope

router = APIRouter(tags=["binance: account"])


def _ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


@router.get("/api/v3/account")
@signed(Scope.READ)
async def account(request: Request) -> dict[str, Any]:
    """Balances and what this key may do: ``canTrade``/``canWithdraw`` describe the calling key (a
    read-only key sees ``canTrade: false``), ``permissions`` and ``scopes`` its rights."""
    ctx = signed_context(request)
    key = ctx.key
    can_trade, can_withdraw = Scope.TRADE in key.scopes, Scope.WITHDRAW in key.scopes
    ex = exchange(request)
    balances = await run(ex, ex.balances, key.user_id)
    return {
        "makerCommission": 10,
        "takerCommission": 10,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "canTrade": can_trade,
        "canWithdraw": can_withdraw,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "updateTime": int(time.time() * 1000),
        "accountType": "SPOT",
        "balances": [
            {"asset": name, "free": ex.assets[name].fmt(free), "locked": ex.assets[name].fmt(locked)}
            for name, (free, locked) in sorted(balances.items())
            if name in ex.assets
        ],
        "permissions": ["SPOT"] if can_trade else [],
        "scopes": sorted(s.value for s in key.scopes),
        "uid": key.user_id,
    }


@router.get("/sapi/v1/account/apiRestrictions")
@signed(None)
async def api_restrictions(request: Request) -> dict[str, Any]:
    """What this key may do, as Binance reports it, plus keyplane's own detail (and the caller's IP
    as the server sees it, the answer to "why is my IP refused")."""
    return restrictions_view(signed_context(request))


def restrictions_view(ctx: AuthContext) -> dict[str, Any]:
    key = ctx.key
    r = key.restrictions
    deadline = key.deadline_ts(None)
    return {
        "ipRestrict": bool(r.ip_allowlist),
        "createTime": _ms(key.created_ts),
        "enableReading": Scope.READ in key.scopes,
        "enableSpotAndMarginTrading": Scope.TRADE in key.scopes,
        "enableWithdrawals": Scope.WITHDRAW in key.scopes,
        "enableInternalTransfer": False,
        "enableMargin": False,
        "enableFutures": False,
        "permitsUniversalTransfer": False,
        "enableVanillaOptions": False,
        "enableFixApiTrade": False,
        "enableFixReadOnly": False,
        "enablePortfolioMarginTrading": False,
        "tradingAuthorityExpirationTime": _ms(deadline),
        # keyplane's own fields
        "apiKey": key.public_id,
        "keyType": key.key_type,
        "scopes": sorted(s.value for s in key.scopes),
        "ipAllowlist": [str(n) for n in r.ip_allowlist],
        "symbols": list(r.symbols),
        "maxNotional": None if r.max_notional is None else str(r.max_notional),
        "dailyWithdrawCap": None if r.daily_withdraw_cap is None else str(r.daily_withdraw_cap),
        "expiresAt": _ms(deadline),
        "idleExpiry": key.idle_s is not None,
        "callerIp": ctx.client_ip,
    }


@router.get("/sapi/v1/asset/tradeFee")
@signed(Scope.READ)
async def trade_fee(request: Request) -> JSONResponse:
    """Each market's (or ``symbol``'s) maker and taker fee, as fractions (``0.001`` = 0.1%): ccxt's
    ``fetch_trading_fees`` and ``fetch_trading_fee``. An unknown symbol is -1121."""
    ctx = signed_context(request)
    ex = exchange(request)
    markets = [market_of(ctx.params, ex.markets)] if ctx.params.get("symbol") else list(ex.markets.values())
    return JSONResponse(
        [{"symbol": m.symbol, "makerCommission": plain(m.maker_fee), "takerCommission": plain(m.taker_fee)}
         for m in markets]
    )  # fmt: skip


def _rate(fraction: Decimal) -> str:
    """A commission rate as Binance writes it: at least 8 decimals (``0.00100000``)."""
    whole, _, frac = format(fraction, "f").partition(".")
    return f"{whole}.{frac.ljust(8, '0')}"


@router.get("/api/v3/account/commission")
@signed(Scope.READ)
async def commission(request: Request) -> JSONResponse:
    """``symbol``'s commission rates in Binance's shape: the standard maker and taker rates are the
    market's fees; buyer, seller, special and tax rates are zero and no discount applies. A missing
    symbol is -1102, an unknown one -1121."""
    ctx = signed_context(request)
    m = market_of(ctx.params, exchange(request).markets)
    zero = _rate(Decimal(0))
    none = {"maker": zero, "taker": zero, "buyer": zero, "seller": zero}
    return JSONResponse(
        {
            "symbol": m.symbol,
            "standardCommission": {**none, "maker": _rate(m.maker_fee), "taker": _rate(m.taker_fee)},
            "specialCommission": none,
            "taxCommission": none,
            "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "",
                         "discount": zero},
        }
    )  # fmt: skip
