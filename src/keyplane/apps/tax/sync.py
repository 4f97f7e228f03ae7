"""Pull trades, deposits and withdrawals from an exchange into the ledger, through ccxt.

- Trades: ``fetch_my_trades`` per symbol (it needs one). On Binance and keyplane, pages follow the
  trade id (``fromId``); elsewhere each page starts at the last stored trade's time, and
  overlapping rows are simply ignored by the ledger.
- Deposits and withdrawals: on a keyplane server, one open-ended query per kind from the cursor
  (``startTime`` without ``endTime``, which keyplane answers with everything since), paged by
  ``offset``: a first sync costs a request or two, not a walk through every 90-day window since
  2017. Elsewhere ``fetch_deposits``/``fetch_withdrawals`` in 90-day windows (Binance's limit),
  each paginated (by ``offset`` on Binance). Transfers that are not final yet are not stored, and
  the cursor stops before them so the next sync picks them up again. The cursor stays
  ``OVERLAP_MS`` behind the clock, so a transfer the exchange records late (or a clock that runs
  ahead of the exchange's) is still found; what is fetched twice is stored once.
- After every page, the rows and the stream's cursor commit together: an interrupted sync resumes
  where it stopped and never stores a row twice.

Amounts come from the exchange's raw fields (``info``) where they are strings (Binance and
keyplane), so they stay exact; otherwise from ccxt's parsed numbers via their shortest ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.ledger import Ledger
from keyplane.apps.tax.model import ZERO, Side, Trade, Transfer
from keyplane.client.ccxt_errors import translate

WINDOW_MS = 90 * 86_400_000
DEFAULT_SINCE_MS = 1_499_990_400_000  # 2017-07-14, when Binance opened
MAX_MARKETS_ALL = 60
OVERLAP_MS = 10 * 60_000

Progress = Callable[[str], None]


@dataclass
class SyncStats:
    account: str
    trades: int = 0
    deposits: int = 0
    withdrawals: int = 0
    requests: int = 0
    streams: list[str] = field(default_factory=list)


def _dec(*candidates: Any) -> Decimal:
    for value in candidates:
        if value is None or value == "":
            continue
        return Decimal(value if isinstance(value, str) else repr(value))
    return ZERO


def to_trade(account: str, t: dict[str, Any], markets: dict[str, Any]) -> Trade:
    info = t.get("info") or {}
    market = markets.get(t["symbol"]) or {}
    base = market.get("base") or t["symbol"].split("/")[0]
    quote = market.get("quote") or t["symbol"].split("/")[1].split(":")[0]
    amount = _dec(info.get("qty"), t.get("amount"))
    cost = _dec(info.get("quoteQty"), t.get("cost"))
    if not cost and t.get("price") is not None:
        cost = amount * _dec(info.get("price"), t.get("price"))
    fee = t.get("fee") or {}
    fee_amount = _dec(info.get("commission"), fee.get("cost"))
    fee_asset = info.get("commissionAsset") or fee.get("currency")
    side: Side = "buy" if t.get("side") == "buy" else "sell"
    return Trade(
        account,
        str(t["id"]),
        int(t["timestamp"]),
        base,
        quote,
        side,
        amount,
        cost,
        fee_amount,
        fee_asset if fee_amount else None,
        None,
        None if t.get("order") is None else str(t["order"]),
    )


def to_transfer(account: str, kind: str, x: dict[str, Any]) -> Transfer:
    info = x.get("info") or {}
    amount = _dec(info.get("amount"), x.get("amount"))
    fee = _dec(info.get("transactionFee"), (x.get("fee") or {}).get("cost")) if kind == "withdrawal" else ZERO
    asset = str(x.get("currency") or info.get("coin"))
    # An exchange's own transfer id is unique per account; a transaction id is not (one on-chain
    # transaction can pay several assets), so without an id the asset is part of the key.
    tid = x.get("id") or (f"{asset}:{x['txid']}" if x.get("txid") else f"{asset}-{x.get('timestamp')}")
    return Transfer(
        account,
        str(tid),
        "deposit" if kind == "deposit" else "withdrawal",
        int(x["timestamp"]),
        asset,
        amount + fee,  # what left the account (Binance reports the fee apart)
        fee,
        x.get("txid"),
        x.get("address"),
    )


class Syncer:
    """Sync one account. ``progress`` is called with a label before each stream starts."""

    def __init__(
        self,
        ledger: Ledger,
        account: str,
        exchange: Any,
        *,
        since_ms: int | None = None,
        symbols: list[str] | None = None,
        page_limit: int = 500,
        now_ms: Callable[[], int] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.ledger, self.account, self.ex = ledger, account, exchange
        self.since_ms = DEFAULT_SINCE_MS if since_ms is None else since_ms
        self.symbols = symbols
        self.limit = page_limit
        self.now_ms = now_ms or (lambda: int(time.time() * 1000))
        self.progress = progress or (lambda _label: None)
        self.stats = SyncStats(account)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.stats.requests += 1
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise translate(e, self.ex) from None

    def plan(self) -> list[str]:
        """The streams to sync: one per symbol, then deposits and withdrawals."""
        markets = self._call(self.ex.load_markets)
        if self.symbols:
            unknown = [s for s in self.symbols if s not in markets]
            if unknown:
                raise TaxError(f"unknown symbol(s) {', '.join(unknown)} on this exchange")
            symbols = list(self.symbols)
        else:
            spot = [s for s, m in markets.items() if m.get("spot", True) and m.get("active", True) is not False]
            if len(spot) <= MAX_MARKETS_ALL:
                symbols = sorted(spot)
            else:
                balance = self._call(self.ex.fetch_balance)
                held = {a for a, v in (balance.get("total") or {}).items() if v}
                symbols = sorted(s for s in spot if markets[s]["base"] in held)
        self.stats.streams = [f"trades:{s}" for s in symbols] + ["deposits", "withdrawals"]
        return self.stats.streams

    def run(self) -> SyncStats:
        for stream in self.stats.streams or self.plan():
            self.progress(f"{self.account} {stream}")
            self.sync(stream)
        return self.stats

    def sync(self, stream: str) -> None:
        """Sync one stream of ``plan``."""
        if stream.startswith("trades:"):
            self.sync_trades(stream.split(":", 1)[1])
        else:
            self.sync_transfers(stream)

    @property
    def _binance_like(self) -> bool:
        """Binance (and keyplane) page trades by id (``fromId``) and transfers by ``offset``, which
        never skips rows that share a millisecond."""
        return getattr(self.ex, "id", None) == "binance"

    @property
    def _keyplane_server(self) -> bool:
        """A keyplane server (``ccxt_exchange`` marks it), which answers a history query with a
        ``startTime`` and no ``endTime`` with every row since, however long ago."""
        return bool((getattr(self.ex, "options", None) or {}).get("keyplaneServer"))

    def sync_trades(self, symbol: str) -> None:
        stream = f"trades:{symbol}"
        if self._binance_like:
            self._sync_trades_by_id(symbol, stream)
            return
        since = self.ledger.cursor(self.account, stream) or self.since_ms
        for _ in range(1_000_000):
            page = self._call(self.ex.fetch_my_trades, symbol, since, self.limit)
            trades = [to_trade(self.account, t, self.ex.markets) for t in page]
            last = max((t.ts for t in trades), default=since)
            with self.ledger.transaction():
                self.stats.trades += self.ledger.add_trades(trades)
                self.ledger.set_cursor(self.account, stream, last)
            if len(page) < self.limit:
                return
            since = last if last > since else since + 1

    def _sync_trades_by_id(self, symbol: str, stream: str) -> None:
        stream = "id" + stream
        last_id = self.ledger.cursor(self.account, stream)
        for _ in range(1_000_000):
            if last_id is None:
                page = self._call(self.ex.fetch_my_trades, symbol, self.since_ms, self.limit)
            else:
                page = self._call(self.ex.fetch_my_trades, symbol, None, self.limit, {"fromId": last_id + 1})
            trades = [to_trade(self.account, t, self.ex.markets) for t in page]
            with self.ledger.transaction():
                self.stats.trades += self.ledger.add_trades(trades)
                if trades:
                    last_id = max(int(t.id) for t in trades)
                    self.ledger.set_cursor(self.account, stream, last_id)
            if len(page) < self.limit:
                return

    def sync_transfers(self, kind: str) -> None:
        fetch = self.ex.fetch_deposits if kind == "deposits" else self.ex.fetch_withdrawals
        start = self.ledger.cursor(self.account, kind) or self.since_ms
        now = self.now_ms()
        if self._keyplane_server:
            pending = self._transfer_pages(kind, fetch, None, {"startTime": start})
            self.ledger.set_cursor(self.account, kind, self._next_cursor(start, now, now, pending))
            return
        while start < now:
            end = min(start + WINDOW_MS, now)
            pending = self._transfer_pages(kind, fetch, start, {"until": end - 1})
            self.ledger.set_cursor(self.account, kind, self._next_cursor(start, end, now, pending))
            if pending is not None:
                return
            start = end

    @staticmethod
    def _next_cursor(start: int, end: int, now: int, pending: int | None) -> int:
        """Where the next sync starts: the end of what was read, but before a transfer that is not
        final yet and ``OVERLAP_MS`` behind the clock; never before ``start``."""
        cursor = min(end, now - OVERLAP_MS, pending if pending is not None else end)
        return max(cursor, start)

    def _transfer_pages(
        self, kind: str, fetch: Callable[..., Any], since: int | None, base: dict[str, Any]
    ) -> int | None:
        """Store every final transfer of one query, page by page; returns the time of the earliest
        transfer that is not final yet, if any."""
        offset, pending = 0, None
        while True:
            params = dict(base)
            if self._binance_like:
                params["offset"] = offset
            page = self._call(fetch, None, since, self.limit, params)
            done = [x for x in page if x.get("status") in ("ok", None) and x.get("timestamp") is not None]
            for x in page:
                if x.get("status") not in ("ok", None, "failed", "canceled") and x.get("timestamp"):
                    pending = min(pending or x["timestamp"], int(x["timestamp"]))
            rows = [to_transfer(self.account, kind[:-1], x) for x in done]
            added = self.ledger.add_transfers(rows)
            setattr(self.stats, kind, getattr(self.stats, kind) + added)  # deposits or withdrawals
            if len(page) < self.limit:
                return pending
            if self._binance_like:
                offset += len(page)
            else:
                since = max(int(x["timestamp"]) for x in page) + 1
