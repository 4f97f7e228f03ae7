"""Answers about the markets keyplane does not have: margin, USDⓈ-M and COIN-M futures, options.

ccxt's ``binance`` class, with its default options, asks for these while it loads markets
(``fetchMargins`` and ``fetchMarkets.types = ['spot', 'linear', 'inverse']``), and a client whose
URL map points every ccxt API at keyplane sends those requests here. Each answer is well-formed
and empty: no symbol, no pair, so ccxt lists exactly keyplane's spot markets and never marks one
of them as tradable on margin. Nothing here reads a database or the caller's key.

ccxt signs the two margin calls (every ``sapi`` call but ``system/status``); their answer is the
same for every caller, so they are public routes and a signature on them is ignored.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

router = APIRouter(tags=["binance: markets keyplane does not have"])


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.get("/fapi/v1/exchangeInfo")
async def usdm_futures_info() -> dict[str, Any]:
    """USDⓈ-M futures (ccxt's ``linear`` markets): none."""
    return {
        "timezone": "UTC",
        "serverTime": _now_ms(),
        "futuresType": "U_MARGINED",
        "rateLimits": [],
        "exchangeFilters": [],
        "assets": [],
        "symbols": [],
    }


@router.get("/dapi/v1/exchangeInfo")
async def coinm_futures_info() -> dict[str, Any]:
    """COIN-M futures (ccxt's ``inverse`` markets): none."""
    return {"timezone": "UTC", "serverTime": _now_ms(), "rateLimits": [], "exchangeFilters": [], "symbols": []}


@router.get("/eapi/v1/exchangeInfo")
async def options_info() -> dict[str, Any]:
    """Options (ccxt's ``option`` markets, loaded only when asked for): none."""
    return {
        "timezone": "UTC",
        "serverTime": _now_ms(),
        "optionContracts": [],
        "optionAssets": [],
        "optionSymbols": [],
        "rateLimits": [],
    }


@router.get("/sapi/v1/margin/allPairs")
async def cross_margin_pairs() -> list[Any]:
    """Cross-margin pairs: none (a spot market's ``isMarginTradingAllowed`` is false)."""
    return []


@router.get("/sapi/v1/margin/isolated/allPairs")
async def isolated_margin_pairs() -> list[Any]:
    """Isolated-margin pairs: none."""
    return []
