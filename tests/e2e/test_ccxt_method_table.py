"""Every unified spot method of ccxt's binance class, called for real against keyplane, and the
method table in docs/exchange.md generated from what happened.

The methods come from ccxt itself: ``ccxt.binance().has`` (the sync and async classes) and
``ccxt.pro.binance().has`` (``watch*``, ``unWatch*`` and ``*Ws``), those marked ``True`` or
``'emulated'``, less the futures, margin and options ones listed in ``NOT_SPOT``. Each method has a
probe (kptest/ccxt_methods/): it calls the method on a funded account with a read, trade and
withdraw key, with the arguments a spot user would pass, runs ccxt's own checks of the structure it
returns, and asserts what the answer must say (symbols, ids, amounts, balances against the ledger).
A REST method runs on ccxt's sync class and on its async class, and both must end alike; a ccxt.pro
method runs on ccxt.pro.

A method *works*, or is *not supported*: keyplane answered with a clear error (a 4xx with a
Binance error body, which ccxt raises as one of its ``ExchangeError`` classes, or a 404 for a path
keyplane does not serve), or ccxt refused the call before sending anything ("not supported by
ccxt"). Anything else (a 5xx, a timeout, an exception such as ``KeyError`` from ccxt's parser, an
answer that fails its probe's assertions) fails the test, with the requests the method made and
keyplane's answers.

The table must equal the block between the markers in docs/exchange.md; with
``KEYPLANE_WRITE_DOCS=1`` the test rewrites that block instead. The rows of stop, take-profit and
trailing orders (``LENIENT``: new, and still changing) are written but not compared.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import secrets
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.client import ccxt_async_exchange, ccxt_exchange, ccxt_pro_exchange
from kptest import streams
from kptest.ccxt_methods import pro, rest
from kptest.ccxt_methods.probing import ASK, BID, Crash, Flavour, Seen, World, record, run_probe
from kptest.exchange import check_invariants, exchange_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOC = Path(__file__).resolve().parents[2] / "docs" / "exchange.md"
BEGIN, END = "<!-- ccxt-methods:begin -->", "<!-- ccxt-methods:end -->"
WRITE_DOCS = os.environ.get("KEYPLANE_WRITE_DOCS") == "1"

TOTAL_S = 240.0  # the deadline of the whole run

# Unified methods of ccxt's binance class that apply only to futures, margin or options. keyplane
# has only spot markets, so these are left out of the table (and listed under it).
NOT_SPOT = frozenset({
    # futures positions, their margin and their leverage
    "addMargin", "reduceMargin", "fetchMarginAdjustmentHistory",
    "fetchPosition", "fetchPositions", "fetchPositionsRisk", "fetchPositionMode", "setPositionMode",
    "fetchPositionWs", "fetchPositionsWs", "watchPositions",
    "fetchADLRank", "fetchPositionADLRank", "fetchPositionsADLRank",
    "fetchLeverage", "fetchLeverages", "setLeverage", "fetchLeverageTiers", "fetchMarketLeverageTiers",
    "fetchMarginMode", "fetchMarginModes", "setMarginMode",
    # reduce-only orders close a futures (or margin) position
    "createReduceOnlyOrder",
    # perpetual funding, and the prices and statistics only derivatives have
    "fetchFundingHistory", "fetchFundingInterval", "fetchFundingIntervals",
    "fetchFundingRate", "fetchFundingRateHistory", "fetchFundingRates",
    "fetchIndexOHLCV", "fetchMarkOHLCV", "fetchPremiumIndexOHLCV",
    "fetchMarkPrice", "fetchMarkPrices", "watchMarkPrice", "watchMarkPrices", "unWatchMarkPrice", "unWatchMarkPrices",
    "fetchOpenInterest", "fetchOpenInterestHistory", "fetchLongShortRatioHistory",
    "fetchMyLiquidations", "watchLiquidations", "watchLiquidationsForSymbols",
    "watchMyLiquidations", "watchMyLiquidationsForSymbols",
    # margin borrowing
    "borrowCrossMargin", "borrowIsolatedMargin", "repayCrossMargin", "repayIsolatedMargin",
    "fetchBorrowInterest", "fetchBorrowRateHistory", "fetchCrossBorrowRate",
    "fetchIsolatedBorrowRate", "fetchIsolatedBorrowRates",
    # options (ccxt's fetchLedgerEntry reads the options account's bills only)
    "fetchOption", "fetchGreeks", "fetchAllGreeks", "fetchSettlementHistory", "fetchMySettlementHistory",
    "fetchLedgerEntry",
})  # fmt: skip

# Stop, take-profit and trailing orders are new and still changing: their rows record what happens
# today, and the comparison with the docs ignores their result (a crash still fails the test).
LENIENT = frozenset({
    "createStopLimitOrder", "createStopLossOrder", "createStopOrder", "createTakeProfitOrder",
    "createTriggerOrder", "createTrailingPercentOrder",
})  # fmt: skip

PROBES = {**rest.PROBES, **pro.PROBES}
assert len(PROBES) == len(rest.PROBES) + len(pro.PROBES), "a method with a REST and a ccxt.pro probe"


# -- which methods ------------------------------------------------------------------------------


def _flag(value: Any) -> str | None:
    return {True: "yes", "emulated": "emulated"}.get(value) if isinstance(value, (bool, str)) else None


@dataclass(frozen=True)
class Method:
    name: str
    rest: str | None  # ccxt.binance().has (the sync and the async class): "yes", "emulated" or None
    pro: str | None  # ccxt.pro.binance().has

    @property
    def flavours(self) -> tuple[Flavour, ...]:
        """A REST method runs on the sync and the async class; a ccxt.pro one on ccxt.pro."""
        return ("sync", "async") if self.rest else ("pro",)


def ccxt_methods() -> tuple[list[Method], list[str]]:
    """(the spot methods to call, sorted; the ones left out as not spot, sorted). A ``has`` entry
    with no method of that name on the class is a capability flag (``spot``, ``ws``...) or a
    method ccxt's Python build lacks, and is not a call."""
    sync_ex, async_ex, pro_ex = ccxt.binance(), ccxt.async_support.binance(), ccxt.pro.binance()
    names = {n for ex in (sync_ex, pro_ex) for n, v in ex.has.items() if _flag(v) and callable(getattr(ex, n, None))}
    for n in names:
        assert _flag(sync_ex.has.get(n)) == _flag(async_ex.has.get(n)), f"ccxt's sync and async binance differ on {n}"
    stale = NOT_SPOT - names
    assert not stale, f"NOT_SPOT names methods ccxt's binance no longer offers: {sorted(stale)}"
    kept = [Method(n, _flag(sync_ex.has.get(n)), _flag(pro_ex.has.get(n))) for n in sorted(names - NOT_SPOT)]
    return kept, sorted(NOT_SPOT)


def _pro(w: World, seen: list[Seen]) -> Any:
    return record(ccxt_pro_exchange(w.xs.url, w.key, w.secret, timeout=10000), seen)


async def run_all(w: World, methods: list[Method]) -> tuple[dict[str, str], list[str]]:
    """({method: result}, [what crashed, with its requests and answers])."""
    results: dict[str, str] = {}
    crashes: list[str] = []
    seen: list[Seen] = []
    clients = {
        "sync": record(ccxt_exchange(w.xs.url, w.key, w.secret, timeout=10000), seen),
        "async": record(ccxt_async_exchange(w.xs.url, w.key, w.secret, timeout=10000), seen),
    }
    try:
        for ex in clients.values():
            result = ex.load_markets()
            if inspect.isawaitable(result):
                await result
        for method in methods:
            outcomes: dict[str, str] = {}
            for flavour in method.flavours:
                ex = clients.get(flavour) or _pro(w, seen)
                try:
                    if flavour == "pro":
                        await ex.load_markets()
                    outcomes[flavour] = await run_probe(method.name, PROBES[method.name], flavour, w, ex, seen)
                except Crash as e:
                    log = "\n".join(f"      {s}" for s in seen[-12:]) or "      (no request)"
                    crashes.append(f"{method.name} ({flavour}): {e}\n{log}")
                finally:
                    if flavour == "pro":
                        await ex.close()
            if len(set(outcomes.values())) > 1:
                crashes.append(f"{method.name}: sync and async differ: {outcomes}")
            elif outcomes and len(outcomes) == len(method.flavours):
                results[method.name] = next(iter(outcomes.values()))
    finally:
        await clients["async"].close()
    return results, crashes


# -- the table ----------------------------------------------------------------------------------


def render(methods: list[Method], results: dict[str, str], left_out: list[str]) -> str:
    rows = ["| method | sync/async | pro | result |", "| --- | --- | --- | --- |"]
    for m in methods:
        result = results[m.name].replace("|", "\\|")
        rows.append(f"| `{m.name}` | {m.rest or 'no'} | {m.pro or 'no'} | {result} |")
    counted = [results[m.name] for m in methods if m.name not in LENIENT]
    works = sum(r.startswith("works") for r in counted)
    by_ccxt = sum(r.startswith("not supported by ccxt") for r in counted)
    lenient = ", ".join(f"`{n}`" for n in sorted(LENIENT))
    summary = (
        f"Of the {len(counted)} methods other than stop and trigger orders, {works} work, "
        f"{len(counted) - works - by_ccxt} are not supported by keyplane and {by_ccxt} not by ccxt's binance "
        f"class for spot. The rows of stop, take-profit and trailing orders ({lenient}) show what they did "
        "when the table was generated; the test does not hold them to it (a crash still fails it)."
    )
    left = "Not listed, as they apply only to futures, margin or options: " + ", ".join(f"`{n}`" for n in left_out)
    return "\n".join([
        f"Generated by `tests/e2e/test_ccxt_method_table.py` from ccxt {ccxt.__version__}: regenerate with",
        "`KEYPLANE_WRITE_DOCS=1 .venv/bin/python -m pytest -p no:cacheprovider tests/e2e/test_ccxt_method_table.py`.",
        "",
        *rows,
        "",
        *textwrap.wrap(summary, 100, break_on_hyphens=False),
        "",
        *textwrap.wrap(left + ".", 100, break_on_hyphens=False),
    ])  # fmt: skip


def _masked(block: str) -> str:
    """The block with the result of every LENIENT row blanked out."""
    lines = []
    for line in block.splitlines():
        m = re.match(r"\| `(\w+)` \| ([^|]*) \| ([^|]*) \| ", line)
        lines.append(f"| `{m[1]}` | {m[2]} | {m[3]} | (not compared) |" if m and m[1] in LENIENT else line)
    return "\n".join(lines)


def doc_block(doc: str) -> tuple[int, int]:
    start, end = doc.find(BEGIN), doc.find(END)
    assert 0 <= start < end, f"{DOC} has no {BEGIN} ... {END} block"
    return start + len(BEGIN), end


# -- the test -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(make_settings) -> Iterator[World]:
    settings = make_settings(withdraw_step_s=0.1, rate_limit_per_key="1000000/minute")
    with exchange_server(settings, streams.market_suffix("T")) as xs:
        svc = xs.services
        assert svc.exchange is not None

        def account(scopes: tuple[str, ...], **credit: str) -> tuple[int, str, str]:
            user = svc.accounts.create_user(f"t{secrets.token_hex(6)}@example.com", "correct horse battery staple")
            for asset, amount in credit.items():
                svc.exchange.wallet.credit(user.id, xs.a(asset), amount)
            issued = svc.keys.create(
                user.id, scopes=scopes, restrictions=svc.keys.build_restrictions(ips=["127.0.0.1/32", "::1"]),
                key_type="hmac", public_key=None, step_up=StepUp.operator(),
            )  # fmt: skip
            return user.id, issued.info.api_key, issued.secret

        _, maker_key, maker_secret = account(("read", "trade"), BTC="10", USDT="100000")
        me, key, secret = account(("read", "trade", "withdraw"), BTC="2", USDT="100000")
        maker = ccxt_exchange(xs.url, maker_key, maker_secret, timeout=10000)
        me_sync = ccxt_exchange(xs.url, key, secret, timeout=10000)
        maker.enableRateLimit = me_sync.enableRateLimit = False
        w = World(xs, me, key, secret, maker, me_sync)
        # The maker's bid and ask, and a trade at each, so every market-data call has data.
        maker.create_order(w.sym, "limit", "buy", 1, BID)
        maker.create_order(w.sym, "limit", "sell", 1, ASK)
        me_sync.create_order(w.sym, "market", "buy", 0.01)
        me_sync.create_order(w.sym, "market", "sell", 0.01)
        yield w


def test_every_spot_method_against_keyplane(world: World) -> None:
    methods, left_out = ccxt_methods()
    missing = sorted({m.name for m in methods} - set(PROBES))
    assert not missing, f"ccxt's binance offers methods with no probe here: {missing} (add a probe, or NOT_SPOT)"

    results, crashes = asyncio.run(asyncio.wait_for(run_all(world, methods), TOTAL_S))
    assert not crashes, (
        "methods that crashed or answered wrongly:\n"
        + "\n".join(crashes)
        + "\n\nthe others:\n"
        + "\n".join(f"  {name}: {result}" for name, result in results.items())
    )
    check_invariants(world.xs.services)

    block = "\n" + render(methods, results, left_out) + "\n"
    doc = DOC.read_text("utf-8")
    start, end = doc_block(doc)
    if WRITE_DOCS:
        DOC.write_text(doc[:start] + block + doc[end:], "utf-8")
        return
    assert _masked(doc[start:end]) == _masked(block), (
        f"the ccxt method table in {DOC.name} is out of date; regenerate it with "
        "KEYPLANE_WRITE_DOCS=1 .venv/bin/python -m pytest -p no:cacheprovider tests/e2e/test_ccxt_method_table.py\n"
        + block
    )
