"""Run a grid: preflight checks, placement, the polling loop, persistence and clean stops.

On a clean stop (the duration reached, or a signal) the bot cancels every order of its grid
(``on_stop="cancel"``, the default) or leaves them on the book (``"leave"``) for a later run to
resume; ``cancel_orders`` also serves ``keyplane bot cancel``. A grid whose orders were all canceled
is placed afresh (with new client order ids) the next time it starts.

Exit codes: 0 the run ended (duration reached or a signal), 1 it ended but some of its orders
could not be canceled (they are still on the book), 2 the bot refused to start (bad arguments, a
key that can withdraw, cannot read or cannot trade), 3 the key stopped working mid-run (revoked,
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

from keyplane.apps.bot.grid import (
    GridConfig,
    GridState,
    Level,
    after_fill,
    assign,
    fill_order,
    initial_sides,
    release,
)
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

EXIT_OK, EXIT_NOT_CANCELED, EXIT_REFUSED, EXIT_KEY_LOST = 0, 1, 2, 3
ON_STOP = ("cancel", "leave")


class Refused(ClientError):
    """The bot will not start; the message says why."""


def preflight(restrictions: dict[str, Any]) -> list[str]:
    """Check a key's restrictions (``apiRestrictions``). Raises ``Refused`` for a key that can
    withdraw, cannot read (the bot reads its orders) or cannot trade; returns warnings (no IP
    allowlist, near expiry)."""
    if restrictions.get("enableWithdrawals"):
        raise Refused(
            "this key can withdraw: a bot must run on a trade-only key (create one without the withdraw scope)"
        )
    missing = [
        scope
        for scope, field in (("read", "enableReading"), ("trade", "enableSpotAndMarginTrading"))
        if not restrictions.get(field)
    ]
    if missing:
        raise Refused(
            f"this key cannot {' or '.join(missing)}: the bot needs the read and trade scopes "
            f"(it lacks {', '.join(missing)})"
        )
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
    on_stop: str = "cancel"
    profile: str | None = None  # saved in the state file, for ``keyplane bot cancel``

    def __post_init__(self) -> None:
        if self.on_stop not in ON_STOP:
            raise Refused(f"--on-stop must be one of: {', '.join(ON_STOP)}")
        self.state = self._load()
        self.stop_requested = False
        self.errors_in_a_row = 0

    # ---- state ---------------------------------------------------------------------------------

    def _load(self) -> GridState | None:
        if not self.state_path.exists():
            return None
        doc = json.loads(self.state_path.read_text())
        state = GridState.from_json(doc["state"])
        # A state an earlier keyplane wrote has the id of the parameters alone: it is this grid's
        # only if the user named the file, which says it belongs to this account.
        if state.grid_id not in (self.config.grid_id, self.config.legacy_grid_id):
            raise Refused(f"{self.state_path} belongs to another grid ({state.grid_id}); use another --state file")
        orders = doc.get("paper_orders")
        if orders is not None and isinstance(self.venue, PaperVenue):
            self.venue.orders.update(orders)
        return state

    def save(self) -> None:
        if self.state is not None:
            doc = {"config": {k: str(v) for k, v in vars(self.config).items()}, "profile": self.profile}
            save_state(self.state_path, doc, self.state, self.venue)

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
        """Place a new grid, or reconcile a saved one with the exchange. A saved grid with nothing
        on the book (its orders were canceled) is placed again, each level's id one generation on."""
        if self.state is None or not self.state.open_levels():
            market = self.venue.market_price()
            if not (self.config.lower <= market <= self.config.upper):
                log.warning("the price %s is outside the grid [%s, %s]", market, self.config.lower, self.config.upper)
            if self.state is None:
                prices = [self.venue.round_price(p) for p in self.config.prices()]
                levels = [Level(i, p) for i, p in enumerate(prices)]
                self.state = GridState(self.config.grid_id, self.config.symbol, levels, dry_run=self.dry_run)
            else:
                log.info("placing grid %s again: none of its orders is on the book", self.state.grid_id)
                levels = self.state.levels
                prices = [lv.price for lv in levels]
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
                        "STOPPED: the key no longer works (%s). Orders were left as they are; state saved to "
                        "%s (with a working key, `keyplane bot cancel --state %s` cancels them)",
                        e.reason,
                        self.state_path,
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
        if self.state is None or not self.state.open_levels():
            return EXIT_OK
        if self.on_stop == "leave":
            log.info(
                "its orders stay on the book: run it again to resume, or `keyplane bot cancel --state %s`",
                self.state_path,
            )
            return EXIT_OK
        try:
            canceled = cancel_orders(self.state, self.venue, self.save)
        except ClientError as e:
            log.error(
                "could not cancel the grid's orders (%s); some are still on the book: "
                "`keyplane bot cancel --state %s` cancels them",
                e,
                self.state_path,
            )
            return EXIT_NOT_CANCELED
        log.info("canceled the grid's %d open order(s)", canceled)
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


def save_state(path: Path, doc: dict[str, Any], state: GridState, venue: Venue) -> None:
    """Write the state file: ``doc`` with ``state`` and, on paper, the paper orders."""
    doc["state"] = state.to_json()
    if isinstance(venue, PaperVenue):
        doc["paper_orders"] = venue.orders
    atomic_write(path, json.dumps(doc, indent=1).encode())


def cancel_orders(state: GridState, venue: Venue, save: Callable[[], None]) -> int:
    """Cancel every order of the grid that may be on the book; returns how many were canceled.
    An order the exchange no longer has open (filled or canceled meanwhile) just frees its level.
    ``save`` runs after each level, so an interruption loses nothing. Raises ``ClientError`` on
    the first order that cannot be canceled (the rest stay as they are)."""
    canceled = 0
    for level in state.open_levels():
        if level.cid is not None:
            try:
                venue.cancel(level.cid)
                canceled += 1
            except OrderGone:
                pass
        release(level)
        save()
    return canceled
