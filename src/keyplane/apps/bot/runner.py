"""Run a grid: preflight checks, placement, the polling loop, persistence and clean stops.

Exit codes: 0 the run ended (duration reached or a signal), 2 the bot refused to start (bad
arguments, a key that can withdraw or cannot trade), 3 the key stopped working mid-run (revoked,
disabled, expired, IP no longer allowed): orders are left as they are and the state is saved.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyplane.apps.bot.grid import GridConfig, GridState, Level, after_fill, assign, fill_order, initial_sides
from keyplane.apps.bot.venues import OrderGone, PaperVenue, Venue
from keyplane.apps.money import CONTEXT
from keyplane.client.errors import (
    FATAL_KEY_REASONS,
    ApiError,
    AuthenticationFailed,
    ClientError,
    ExchangeUnreachable,
    PermissionDenied,
    RateLimited,
    ServerError,
)
from keyplane.client.keystore import atomic_write

log = logging.getLogger("keyplane.bot")

EXIT_OK, EXIT_REFUSED, EXIT_KEY_LOST = 0, 2, 3


class Refused(ClientError):
    """The bot will not start; the message says why."""


def preflight(restrictions: dict[str, Any]) -> list[str]:
    """Check a key's restrictions (``apiRestrictions``). Raises ``Refused`` for a key that can
    withdraw or cannot trade; returns warnings (no IP allowlist, near expiry)."""
    if restrictions.get("enableWithdrawals"):
        raise Refused(
            "this key can withdraw: a bot must run on a trade-only key (create one without the withdraw scope)"
        )
    if not restrictions.get("enableSpotAndMarginTrading"):
        raise Refused("this key cannot trade: it needs the trade scope")
    warnings = []
    if not restrictions.get("ipRestrict"):
        warnings.append("this key has no IP allowlist: anyone who steals it can trade with it from anywhere")
    expiry = restrictions.get("tradingAuthorityExpirationTime") or restrictions.get("expiresAt")
    if expiry and int(expiry) - time.time() * 1000 < 7 * 86_400_000:
        warnings.append("this key expires within 7 days; the bot will stop when it does")
    return warnings


@dataclass
class Runner:
    config: GridConfig
    venue: Venue
    state_path: Path
    dry_run: bool = False
    interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    max_backoff_s: float = 60.0

    def __post_init__(self) -> None:
        self.state = self._load()
        self.stop_requested = False
        self.errors_in_a_row = 0

    # ---- state ---------------------------------------------------------------------------------

    def _load(self) -> GridState | None:
        if not self.state_path.exists():
            return None
        doc = json.loads(self.state_path.read_text())
        state = GridState.from_json(doc["state"])
        if state.grid_id != self.config.grid_id:
            raise Refused(f"{self.state_path} belongs to another grid ({state.grid_id}); use another --state file")
        orders = doc.get("paper_orders")
        if orders is not None and isinstance(self.venue, PaperVenue):
            self.venue.orders.update(orders)
        return state

    def save(self) -> None:
        if self.state is None:
            return
        doc: dict[str, Any] = {
            "config": {k: str(v) for k, v in vars(self.config).items()},
            "state": self.state.to_json(),
        }
        if isinstance(self.venue, PaperVenue):
            doc["paper_orders"] = self.venue.orders
        atomic_write(self.state_path, json.dumps(doc, indent=1).encode())

    # ---- orders --------------------------------------------------------------------------------

    def _send(self, level: Level) -> None:
        """Send a pending level's order (its id is already saved)."""
        assert level.side is not None
        assert level.cid is not None
        price = self.venue.round_price(level.price)
        amount = self.venue.round_amount(CONTEXT.divide(self.config.quote_per_level, price))
        level.order_id = self.venue.place(level.side, price, amount, level.cid)
        level.status = "open"
        log.info("placed %s %s %s @ %s (%s)", level.side, amount, self.config.symbol, price, level.cid)
        self.save()

    def start(self) -> None:
        """Place a new grid, or reconcile a saved one with the exchange."""
        if self.state is None:
            market = self.venue.market_price()
            if not (self.config.lower <= market <= self.config.upper):
                log.warning("the price %s is outside the grid [%s, %s]", market, self.config.lower, self.config.upper)
            prices = [self.venue.round_price(p) for p in self.config.prices()]
            levels = [Level(i, p) for i, p in enumerate(prices)]
            self.state = GridState(self.config.grid_id, self.config.symbol, levels, dry_run=self.dry_run)
            for level, side in zip(levels, initial_sides(prices, market), strict=True):
                if side is not None:
                    assign(level, side, self.state.grid_id)
            self.save()  # every id is on disk before the first order leaves
        else:
            log.info("resuming grid %s with %d open levels", self.state.grid_id, len(self.state.open_levels()))
        for level in list(self.state.levels):
            if level.status == "pending":
                self._reconcile_pending(level)

    def _reconcile_pending(self, level: Level) -> None:
        assert level.cid is not None
        try:
            status = self.venue.status(level.cid)
        except OrderGone:
            self._send(level)
            return
        level.status = "open"
        self.save()
        if status != "open":
            self._handle_done(level, status)

    def _handle_done(self, level: Level, status: str) -> None:
        assert self.state is not None
        if status == "closed":
            log.info("filled %s at level %d (%s)", level.side, level.index, level.price)
            self.state.history.append({"level": level.index, "side": level.side, "price": str(level.price)})
            target = after_fill(self.state, level)
            self.save()
            if target is not None:
                self._send(target)
        else:  # canceled or expired by someone else: put the same side back
            side = level.side
            log.warning("order %s was %s outside the bot; placing it again", level.cid, status)
            if side is not None:
                assign(level, side, self.state.grid_id)
                self.save()
                self._send(level)

    def tick(self) -> None:
        assert self.state is not None
        open_ids = self.venue.open_cids()
        done: list[tuple[Level, str]] = []
        for level in self.state.levels:
            if level.status == "pending":
                self._reconcile_pending(level)
            elif level.status == "open" and level.cid not in open_ids:
                try:
                    status = self.venue.status(level.cid or "")
                except OrderGone:
                    status = "canceled"
                if status != "open":
                    done.append((level, status))
        statuses = {id(lv): st for lv, st in done}
        for level in fill_order([lv for lv, _ in done]):
            self._handle_done(level, statuses[id(level)])

    # ---- the loop ------------------------------------------------------------------------------

    def run(self, duration_s: float | None = None, max_ticks: int | None = None) -> int:
        deadline = None if duration_s is None else self.clock() + duration_s
        ticks = 0
        started = False
        while not self.stop_requested:
            if deadline is not None and self.clock() >= deadline:
                break
            if max_ticks is not None and ticks >= max_ticks:
                break
            try:
                if not started:
                    self.start()
                    started = True
                else:
                    self.tick()
                ticks += 1
                self.errors_in_a_row = 0
                self.sleep(self.interval_s)
            except (AuthenticationFailed, PermissionDenied) as e:
                if e.reason in FATAL_KEY_REASONS or isinstance(e, AuthenticationFailed):
                    self.save()
                    log.critical(
                        "STOPPED: the key no longer works (%s). Orders were left as they are; state saved to %s",
                        e.reason,
                        self.state_path,
                    )
                    return EXIT_KEY_LOST
                raise
            except RateLimited as e:
                self._backoff(max(e.retry_after_s, 1.0), "rate limited")
            except (ExchangeUnreachable, ServerError) as e:
                self._backoff(1.0, f"exchange unreachable ({type(e).__name__}); reconnecting")
            except ApiError as e:
                # An order the exchange refused (balance, filter): log it and keep the grid running.
                self._backoff(1.0, f"exchange refused a request: {e}")
        self.save()
        log.info("grid %s stopped: %d fills; state saved to %s", self.config.grid_id, self.fills, self.state_path)
        return EXIT_OK

    @property
    def fills(self) -> int:
        return self.state.fills if self.state else 0

    def _backoff(self, base: float, why: str) -> None:
        self.errors_in_a_row += 1
        wait = min(self.max_backoff_s, base * 2 ** (self.errors_in_a_row - 1))
        log.warning("%s: waiting %.1f s", why, wait)
        self.save()
        self.sleep(wait)
