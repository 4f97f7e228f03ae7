"""The wallet on the Binance surface (``/sapi/v1/capital/...``, ``/sapi/v1/asset/assetDetail``):
every coin with its network, fees and limits, deposit addresses, and deposits and withdrawals with
Binance's status codes: deposits 1 = success; withdrawals 2 = awaiting, 4 = processing, 6 = completed.

Each asset of the reference exchange is on one network (its ``network`` in the markets file), so a
coin's ``networkList`` has one entry, its default."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import run, write
from keyplane.api.deps import exchange, signed_context
from keyplane.auth.routes import signed
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.markets import Asset
from keyplane.exchange.params import int_param, mandatory, text_param
from keyplane.exchange.service import ExchangeService
from keyplane.exchange.wallet import COMPLETED, WithdrawRequest, binance_time
from keyplane.keys.scopes import Scope
from keyplane.parsing import INT64_MAX

router = APIRouter(tags=["binance: wallet"])


def _window(p: dict[str, str]) -> dict[str, Any]:
    start, end = int_param(p, "startTime"), int_param(p, "endTime")
    if start is not None and end is not None and end - start > 90 * 86_400_000:
        raise BadParameter("The time between startTime and endTime can't be longer than 90 days.")
    return {
        "coin": text_param(p, "coin", max_len=16) or None,
        "start_ms": start,
        "end_ms": end,
        "limit": int_param(p, "limit", 1000, 1, 1000) or 1000,
        "offset": int_param(p, "offset", 0) or 0,
    }


def _fmt(ex: ExchangeService, coin: str, units: int) -> str:
    return ex.assets[coin].plain(units) if coin in ex.assets else str(units)


@router.get("/sapi/v1/capital/deposit/hisrec")
@signed(Scope.READ)
async def deposit_history(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    rows = await run(ex, ex.wallet.deposits, ctx.key.user_id, **_window(ctx.params))
    return JSONResponse(
        [
            {"id": str(r.id), "amount": _fmt(ex, r.coin, r.amount), "coin": r.coin, "network": r.network,
             "status": r.status, "address": r.address, "addressTag": "", "txId": r.tx_id, "insertTime": r.ts,
             "completeTime": r.ts, "transferType": 0, "confirmTimes": "1/1", "unlockConfirm": 0, "walletType": 0}
            for r in rows
        ]
    )  # fmt: skip


@router.get("/sapi/v1/capital/withdraw/history")
@signed(Scope.READ)
async def withdraw_history(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    rows = await run(ex, ex.wallet.withdrawals, ctx.key.user_id, **_window(ctx.params))
    out = []
    for r in rows:
        doc: dict[str, Any] = {
            "id": r.id, "amount": _fmt(ex, r.coin, r.amount), "transactionFee": _fmt(ex, r.coin, r.fee),
            "coin": r.coin, "status": r.status, "address": r.address, "addressTag": r.address_tag, "txId": r.tx_id,
            "applyTime": binance_time(r.apply_ms), "network": r.network, "transferType": 0, "info": "",
            "confirmNo": 1 if r.status == COMPLETED else 0, "walletType": 0,
        }  # fmt: skip
        if r.complete_ms is not None:
            doc["completeTime"] = binance_time(r.complete_ms)
        out.append(doc)
    return JSONResponse(out)


@router.post("/sapi/v1/capital/withdraw/apply")
@signed(Scope.WITHDRAW)
async def withdraw_apply(request: Request) -> JSONResponse:
    ctx = signed_context(request)
    ex = exchange(request)
    p = ctx.params
    req = WithdrawRequest(
        coin=mandatory(p, "coin", max_len=16), address=mandatory(p, "address"), amount=mandatory(p, "amount"),
        network=text_param(p, "network", max_len=16), address_tag=text_param(p, "addressTag", max_len=64),
    )  # fmt: skip
    key = ctx.key
    wid = await write(
        ex,
        ex.wallet.withdraw,
        key.user_id,
        req,
        key_id=key.public_id,
        daily_cap=key.restrictions.daily_withdraw_cap,
        not_after_s=ctx.not_after_s,
    )
    return JSONResponse({"id": wid})


def _network(asset: Asset) -> dict[str, Any]:
    """``asset``'s one network, in the shape of an entry of Binance's ``networkList``."""
    one = asset.plain(1)  # the smallest amount: what a withdrawal must be a multiple of
    return {
        "network": asset.network, "coin": asset.name, "name": asset.network, "isDefault": True,
        "depositEnable": True, "withdrawEnable": True, "depositDesc": "", "withdrawDesc": "",
        "specialTips": "", "specialWithdrawTips": "", "resetAddressStatus": False,
        "addressRegex": f"^(?:{asset.address_pattern})$", "addressRule": "", "memoRegex": "",
        "withdrawFee": asset.plain(asset.withdraw_fee), "withdrawMin": asset.plain(max(asset.withdraw_min, 1)),
        "withdrawMax": asset.plain(INT64_MAX - asset.withdraw_fee), "withdrawIntegerMultiple": one,
        "withdrawInternalMin": one, "depositDust": one, "minConfirm": 1, "unLockConfirm": 0,
        "sameAddress": False, "withdrawTag": False, "estimatedArrivalTime": 1, "busy": False,
    }  # fmt: skip


@router.get("/sapi/v1/capital/config/getall")
@signed(Scope.READ)
async def all_coins(request: Request) -> JSONResponse:
    """Every coin, with the caller's balances and its network's fees and limits (ccxt's
    ``fetch_currencies``, which ``load_markets`` calls with ccxt's default options)."""
    ctx = signed_context(request)
    ex = exchange(request)
    user_id = ctx.key.user_id
    balances = await run(ex, ex.balances, user_id)
    withdrawing = await run(ex, ex.wallet.withdrawing, user_id)
    traded = {a.name for m in ex.markets.values() for a in (m.base, m.quote)}
    out = []
    for name, asset in ex.assets.items():
        free, locked = balances.get(name, (0, 0))
        out.append(
            {"coin": name, "depositAllEnable": True, "withdrawAllEnable": True, "name": name,
             "free": asset.plain(free), "locked": asset.plain(locked), "freeze": "0",
             "withdrawing": asset.plain(withdrawing.get(name, 0)), "ipoing": "0", "ipoable": "0", "storage": "0",
             "isLegalMoney": False, "trading": name in traded, "networkList": [_network(asset)]}
        )  # fmt: skip
    return JSONResponse(out)


@router.get("/sapi/v1/asset/assetDetail")
@signed(Scope.READ)
async def asset_detail(request: Request) -> JSONResponse:
    """Each coin's (or ``asset``'s) withdrawal minimum and fee, and whether it can move. Amounts are
    decimal strings (Binance sends the fee as a JSON number; keyplane never puts money in a float)."""
    ctx = signed_context(request)
    ex = exchange(request)
    wanted = text_param(ctx.params, "asset", max_len=16)
    assets = [ex.wallet.asset(wanted)] if wanted else list(ex.assets.values())
    return JSONResponse(
        {
            a.name: {"minWithdrawAmount": a.plain(max(a.withdraw_min, 1)), "depositStatus": True,
                     "withdrawFee": a.plain(a.withdraw_fee), "withdrawStatus": True, "depositTip": ""}
            for a in assets
        }
    )  # fmt: skip


@router.get("/sapi/v1/capital/deposit/address")
@signed(Scope.READ)
async def deposit_address(request: Request) -> JSONResponse:
    """The caller's deposit address for ``coin`` (on ``network``, default the coin's own): the same
    on every call. Nothing watches it: on the reference exchange the operator credits deposits."""
    ctx = signed_context(request)
    ex = exchange(request)
    p = ctx.params
    asset, address = ex.wallet.deposit_address(
        ctx.key.user_id, mandatory(p, "coin", max_len=16), text_param(p, "network", max_len=16)
    )
    return JSONResponse({"address": address, "coin": asset.name, "tag": "", "url": ""})


@router.get("/sapi/v1/capital/deposit/address/list")
@signed(Scope.READ)
async def deposit_addresses(request: Request) -> JSONResponse:
    """The caller's deposit addresses for ``coin``, one per network (so one: each coin has one)."""
    ctx = signed_context(request)
    ex = exchange(request)
    p = ctx.params
    asset, address = ex.wallet.deposit_address(
        ctx.key.user_id, mandatory(p, "coin", max_len=16), text_param(p, "network", max_len=16)
    )
    return JSONResponse([{"coin": asset.name, "address": address, "tag": "", "isDefault": 1}])
