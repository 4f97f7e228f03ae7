"""Console wallet: balances, the demo faucet, withdrawals, orders and the withdrawal address
allowlist; and the allowlist as JSON under ``/v1/account/withdraw-addresses``.

A withdrawal from the console and every change to the address allowlist need a fresh TOTP code
(``verify_step_up``); the faucet exists only when the server runs with ``KEYPLANE_DEMO=true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from keyplane.api import fields
from keyplane.api.console.web import (
    ConsoleUser,
    FormStr,
    PageUser,
    api_user,
    check_csrf,
    error_context,
    redirect,
    render,
    verify_step_up,
)
from keyplane.api.deps import exchange
from keyplane.errors import KeyplaneError, NotFound
from keyplane.exchange.wallet import WithdrawRequest, binance_time

router = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/v1/account/withdraw-addresses", tags=["account"])

ApiUser = Annotated[ConsoleUser, Depends(api_user)]
STATUS = {2: "awaiting", 4: "processing", 6: "completed", 1: "cancelled", 3: "rejected", 5: "failed"}


def _page(request: Request, user: ConsoleUser, extra: dict[str, Any] | None = None, status: int = 200) -> HTMLResponse:
    ex = exchange(request)
    w = ex.wallet
    balances = [
        {"asset": name, "free": ex.assets[name].fmt(free), "locked": ex.assets[name].fmt(locked)}
        for name, (free, locked) in sorted(ex.balances(user.id).items())
    ]
    fmt = {name: a.fmt for name, a in ex.assets.items()}
    deposits = [
        {**d, "amount": fmt[str(d["coin"])](int(d["amount"])), "time": binance_time(int(d["ts"]))}  # type: ignore[call-overload]
        for d in w.deposits(user.id, limit=20)
    ]
    withdrawals = [
        {**x, "amount": fmt[str(x["coin"])](int(x["amount"])), "fee": fmt[str(x["coin"])](int(x["fee"])),  # type: ignore[call-overload]
         "state": STATUS.get(int(x["status"]), str(x["status"])), "time": binance_time(int(x["apply_ms"]))}  # type: ignore[call-overload]
        for x in w.withdrawals(user.id, limit=20)
    ]  # fmt: skip
    orders = [
        {"id": v.id, "symbol": v.symbol, "side": v.side, "type": v.type, "status": v.status,
         "price": m.price_text(v.price) if v.price else "market", "qty": m.qty_text(v.orig_qty),
         "filled": m.qty_text(v.executed_qty), "time": binance_time(v.created_ms)}
        for v in ex.orders.recent_orders(user.id, 30)
        if (m := ex.markets.get(v.symbol)) is not None  # a market since taken off the list: left out
    ]  # fmt: skip
    ctx: dict[str, Any] = {
        "active": "wallet",
        "balances": balances,
        "deposits": deposits,
        "withdrawals": withdrawals,
        "orders": orders,
        "addresses": w.list_addresses(user.id),
        "assets": [{"name": a.name, "network": a.network, "fee": a.fmt(a.withdraw_fee)} for a in ex.assets.values()],
        "demo": ex.demo,
        "form": {},
    }
    ctx.update(extra or {})
    return render(request, "wallet.html", ctx, user=user, status_code=status)


@router.get("/wallet", response_class=HTMLResponse)
def wallet_page(request: Request, user: PageUser) -> Response:
    notice = {"faucet": "Demo funds credited.", "withdraw": "Withdrawal requested.", "address": "Allowlist updated."}
    return _page(request, user, {"notice": notice.get(request.query_params.get("done", ""))})


@router.post("/wallet/faucet")
def faucet(request: Request, user: PageUser, csrf_token: FormStr = "") -> Response:
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        ex = exchange(request)
        if not ex.demo:
            raise NotFound("the faucet exists only in demo mode (KEYPLANE_DEMO=true)")
        ex.wallet.faucet(user.id)
    except KeyplaneError as e:
        return _page(request, user, error_context(e), status=e.status)
    return redirect("/wallet?done=faucet")


@router.post("/wallet/withdraw")
def withdraw(
    request: Request,
    user: PageUser,
    coin: FormStr = "",
    address: FormStr = "",
    amount: FormStr = "",
    totp: FormStr = "",
    csrf_token: FormStr = "",
) -> Response:
    form = {"coin": coin, "address": address, "amount": amount}
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        verify_step_up(request, user, totp)
        exchange(request).wallet.withdraw(user.id, WithdrawRequest(coin, address, amount))
    except KeyplaneError as e:
        ctx = error_context(e)
        if e.code in ("invalid_address",):
            ctx = {"errors": {"address": e.message}}
        elif e.code in ("illegal_characters", "too_precise", "withdraw_refused", "insufficient_balance"):
            ctx = {"errors": {"amount": e.message}}
        return _page(request, user, {**ctx, "form": form}, status=e.status)
    return redirect("/wallet?done=withdraw")


@router.post("/wallet/addresses")
def add_address(
    request: Request,
    user: PageUser,
    coin: FormStr = "",
    address: FormStr = "",
    label: FormStr = "",
    totp: FormStr = "",
    csrf_token: FormStr = "",
) -> Response:
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        label = fields.checked_text(label, "label", 64)
        proof = verify_step_up(request, user, totp)
        exchange(request).wallet.add_address(user.id, coin, address, label, step_up=proof)
    except KeyplaneError as e:
        ctx = error_context(e, totp_field="address_totp")
        if e.code == "invalid_address":
            ctx = {"errors": {"new_address": e.message}}
        return _page(request, user, {**ctx, "address_form": {"coin": coin, "address": address}}, status=e.status)
    return redirect("/wallet?done=address")


@router.post("/wallet/addresses/{entry_id}/delete")
def remove_address(
    request: Request, user: PageUser, entry_id: fields.RowIdPath, totp: FormStr = "", csrf_token: FormStr = ""
) -> Response:
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        proof = verify_step_up(request, user, totp)
        exchange(request).wallet.remove_address(user.id, entry_id, step_up=proof)
    except KeyplaneError as e:
        return _page(request, user, error_context(e), status=e.status)
    return redirect("/wallet?done=address")


class AddressIn(BaseModel):
    coin: Annotated[str, Field(max_length=16), fields.text(16)]
    address: Annotated[str, Field(max_length=128), fields.text(128)]
    label: Annotated[str, Field(max_length=64), fields.text(64)] = ""
    totp: fields.Code = Field(description="A fresh TOTP code: every allowlist change needs one.")


class StepUpIn(BaseModel):
    totp: fields.Code


@api.get("")
def list_addresses(request: Request, user: ApiUser) -> list[dict[str, Any]]:
    """The account's withdrawal address allowlist. Empty: withdrawals may go to any valid address."""
    return [a.as_dict() for a in exchange(request).wallet.list_addresses(user.id)]


@api.post("", status_code=201)
def add_address_api(request: Request, user: ApiUser, body: AddressIn) -> dict[str, Any]:
    """Allow an address (needs a fresh TOTP code). Once the list has an entry, withdrawals may go
    only to listed addresses."""
    proof = verify_step_up(request, user, body.totp)
    return exchange(request).wallet.add_address(user.id, body.coin, body.address, body.label, step_up=proof)


@api.delete("/{entry_id}", status_code=204)
def remove_address_api(request: Request, user: ApiUser, entry_id: fields.RowIdPath, body: StepUpIn) -> Response:
    """Remove an entry (needs a fresh TOTP code)."""
    proof = verify_step_up(request, user, body.totp)
    exchange(request).wallet.remove_address(user.id, entry_id, step_up=proof)
    return Response(status_code=204)
