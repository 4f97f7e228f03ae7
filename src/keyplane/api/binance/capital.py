"""Deposits and withdrawals on the Binance surface (``/sapi/v1/capital/...``), with Binance's status
codes: deposits 1 = success; withdrawals 2 = awaiting, 4 = processing, 6 = completed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keyplane.api.binance.exchange_common import run, write
from keyplane.api.deps import exchange, signed_context
from keyplane.auth.routes import signed
from keyplane.exchange.errors import BadParameter
from keyplane.exchange.params import int_param, mandatory, text_param
from keyplane.exchange.service import ExchangeService
from keyplane.exchange.wallet import COMPLETED, WithdrawRequest, binance_time
from keyplane.keys.scopes import Scope

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
