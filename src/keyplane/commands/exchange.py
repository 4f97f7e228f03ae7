"""Exchange commands: ``keyplane admin credit`` (a deposit) and ``keyplane simulate`` (a market maker).

The simulator is a bot like any other: it gets its own users and trade keys, and then quotes and
trades only through the public Binance-compatible HTTP API with ccxt, so a fresh demo has live
books, tickers and klines.
"""

from __future__ import annotations

import random
import secrets
import time
from decimal import ROUND_DOWN, Decimal
from typing import Annotated, Any

import typer

from keyplane.accounts.stepup import StepUp
from keyplane.commands.common import emit_json, fail, out_console, services
from keyplane.errors import KeyplaneError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]

START_PRICES = {"BTCUSDT": Decimal("60000"), "ETHUSDT": Decimal("3000"), "ETHBTC": Decimal("0.05")}
SIM_USERS = ("simulator-maker@keyplane.invalid", "simulator-taker@keyplane.invalid")


def credit(
    email: str,
    asset: Annotated[str, typer.Argument(help="Asset code, e.g. USDT.")],
    amount: Annotated[str, typer.Argument(help="Exact decimal amount, e.g. 1000 or 0.5.")],
    as_json: JsonOpt = False,
) -> None:
    """Credit an account: a completed deposit with its own id and txid."""
    with services() as svc:
        assert svc.exchange is not None
        user = svc.accounts.get_by_email(email)
        if user is None:
            fail(f"no user with email {email}")
        try:
            deposit = svc.exchange.wallet.credit(user.id, asset, amount, actor="admin:cli")
        except KeyplaneError as e:
            fail(e.message)
    if as_json:
        emit_json(deposit)
    else:
        out_console.print(f"credited {deposit['amount']} {deposit['coin']} to {email} (deposit {deposit['id']})")
        out_console.print(f"txid {deposit['txId']}")


def _bot_accounts() -> list[tuple[str, str]]:
    """Create (or reuse) the simulator's users, fund them, and issue each a fresh trade key."""
    creds: list[tuple[str, str]] = []
    with services() as svc:
        ex = svc.exchange
        assert ex is not None
        for email in SIM_USERS:
            user = svc.accounts.get_by_email(email)
            if user is None:
                user = svc.accounts.create_user(email, secrets.token_urlsafe(24), actor="simulator")
            have = ex.balances(user.id)
            for asset in ex.assets.values():
                if have.get(asset.name, (0, 0))[0] < asset.faucet_amount * 50:
                    ex.wallet.credit(user.id, asset.name, asset.fmt(asset.faucet_amount * 100), actor="simulator")
            issued = svc.keys.create(
                user.id,
                scopes=("read", "trade"),
                restrictions=svc.keys.build_restrictions(ips=["127.0.0.1/32", "::1/128"]),
                label="keyplane simulate",
                step_up=StepUp.operator(),  # the operator's own simulation accounts
            )
            assert issued.secret is not None
            creds.append((issued.info.api_key, issued.secret))
    return creds


def _round(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_DOWN) * step


def simulate(
    url: Annotated[
        str | None, typer.Option(help="The keyplane server; default: http://HOST:PORT from settings.")
    ] = None,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds.")] = 60.0,
    iterations: Annotated[int, typer.Option(help="Stop after this many quoting rounds.")] = 1000,
    interval: Annotated[float, typer.Option(help="Seconds between rounds.")] = 1.0,
    levels: Annotated[int, typer.Option(help="Price levels quoted on each side.")] = 5,
    seed: Annotated[int | None, typer.Option(help="Random seed, for a repeatable walk.")] = None,
) -> None:
    """Run a simulated market maker through the public API until --duration or --iterations."""
    from keyplane.client import ccxt_exchange
    from keyplane.commands.common import load_settings

    settings = load_settings()
    base_url = url or f"http://{settings.host}:{settings.port}"
    rng = random.Random(seed)  # a price walk for demos, not a secret
    (maker_key, maker_secret), (taker_key, taker_secret) = _bot_accounts()
    maker = ccxt_exchange(base_url, maker_key, maker_secret, timeout=10000)
    taker = ccxt_exchange(base_url, taker_key, taker_secret, timeout=10000)
    try:
        markets = _retrying(maker.load_markets)
    except Exception as e:
        fail(f"cannot reach {base_url}: {type(e).__name__}")
    prices: dict[str, Decimal] = {}
    for sym, m in markets.items():
        try:
            ticker = _retrying(maker.fetch_ticker, sym) or {}
        except Exception as e:
            fail(f"cannot read the {sym} ticker from {base_url}: {type(e).__name__}")
        last = ticker.get("last") or 0
        prices[sym] = Decimal(str(last)) if last else START_PRICES.get(m["id"], Decimal("1"))
    deadline = time.monotonic() + duration
    rounds = trades = 0
    while rounds < iterations and time.monotonic() < deadline:
        rounds += 1
        for sym, m in markets.items():
            tick = Decimal(str(m["precision"]["price"]))
            step = Decimal(str(m["precision"]["amount"]))
            mid = prices[sym] * (1 + Decimal(str(rng.gauss(0, 0.002))))
            mid = max(_round(mid, tick), tick * 10)
            prices[sym] = mid
            _cancel_all(maker, sym)
            min_cost = Decimal(str(m["limits"]["cost"]["min"] or 0))
            for i in range(1, levels + 1):
                spread = mid * Decimal("0.001") * i
                qty = max(_round(min_cost * 3 / mid, step), step) * (1 + rng.randint(0, 3))
                for side, raw in (("buy", mid - spread), ("sell", mid + spread)):
                    price = _round(raw, tick)
                    if price > 0:
                        _try(maker.create_order, sym, "limit", side, float(qty), float(price))
            if rng.random() < 0.7:
                qty = max(_round(min_cost * 2 / mid, step), step)
                if _try(taker.create_order, sym, "market", rng.choice(["buy", "sell"]), float(qty)):
                    trades += 1
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
    # The last quotes stay on the books, so the demo keeps a live book after the simulator stops.
    out_console.print(f"simulated {rounds} rounds, {trades} taker trades on {len(markets)} markets at {base_url}")


def _cancel_all(ex: Any, symbol: str) -> None:
    import ccxt

    try:
        orders = _retrying(ex.fetch_open_orders, symbol)
    except ccxt.OperationFailed as e:
        out_console.print(f"skipped cancelling {symbol}: the server is unavailable ({type(e).__name__})")
        return
    for order in orders:
        _try(ex.cancel_order, order["id"], symbol)


# A transient failure (the server answered 503, a timeout, a dropped connection) is retried this
# many times, waiting RETRY_BASE_S, then twice as long each time (with jitter), at most RETRY_MAX_S.
RETRIES = 5
RETRY_BASE_S = 0.2
RETRY_MAX_S = 5.0


def _retrying(fn: Any, *args: Any, sleep: Any = time.sleep, rng: random.Random | None = None) -> Any:
    """``fn(*args)``, retried with exponential back-off while the failure is transient."""
    import ccxt

    jitter = rng or random.Random()  # spreads retries; not a secret
    delay = RETRY_BASE_S
    for attempt in range(RETRIES + 1):
        try:
            return fn(*args)
        except ccxt.OperationFailed:  # 503 (-1001), timeouts, connection errors, a passed recvWindow
            if attempt == RETRIES:
                raise
            sleep(min(RETRY_MAX_S, delay) * (0.5 + jitter.random()))
            delay *= 2
    raise AssertionError("unreachable")


def _try(fn: Any, *args: Any) -> bool:
    """One bot action; a refused order (funds, filters) is part of trading, not a reason to stop,
    and a transient failure (503, timeout) is retried with back-off before it counts as one."""
    import ccxt

    try:
        _retrying(fn, *args)
    except (ccxt.InvalidOrder, ccxt.InsufficientFunds, ccxt.BadRequest, ccxt.OrderNotFound):
        return False
    except ccxt.OperationFailed as e:
        out_console.print(f"skipped one action: the server is unavailable ({type(e).__name__})", highlight=False)
        return False
    return True


def register(root: typer.Typer) -> None:
    """``keyplane admin credit`` and ``keyplane simulate``."""
    from keyplane.commands.admin import app as admin_app

    admin_app.command("credit")(credit)
    root.command("simulate")(simulate)
