"""Deposits, withdrawals and the per-account withdrawal address allowlist.

A withdrawal moves ``amount + fee`` from the user's available balance to the ``withdrawing`` account
when it is applied (Binance status 2, awaiting), is picked up (4, processing), and completes (6):
then ``amount`` goes to ``external`` and the fee to ``fees``. :meth:`WalletService.advance` moves
withdrawals along; the server calls it on a timer. Each step is a conditional UPDATE, so when
several processes run it at once each withdrawal still advances exactly once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

from sqlalchemy import exc

from keyplane.accounts.stepup import StepUp, require_step_up
from keyplane.audit.events import EventType
from keyplane.audit.service import record
from keyplane.db import Database
from keyplane.errors import NotFound
from keyplane.exchange import events as EV
from keyplane.exchange import ledger as L
from keyplane.exchange.errors import (
    BadParameter,
    InvalidAddress,
    KeyLimitExceeded,
    WithdrawRefused,
)
from keyplane.exchange.markets import Asset, plain, to_units
from keyplane.exchange.orders import check_deadline
from keyplane.exchange.rows import AllowedAddress, Deposit, Withdrawal
from keyplane.exchange.sql import Raw, read, write
from keyplane.keys.format import mask
from keyplane.parsing import INT64_MAX

AWAITING, PROCESSING, COMPLETED = 2, 4, 6
_ALLOWLIST_STEP_UP = "changing the withdrawal address allowlist needs a fresh TOTP code"
DAY_MS = 86_400_000
_Row = TypeVar("_Row", Deposit, Withdrawal)

_INSERT_DEPOSIT = (
    "INSERT INTO ex_deposits (user_id, coin, network, amount, address, tx_id, source, status, ts) "
    "VALUES (:user_id, :coin, :network, :amount, :address, :tx_id, :source, :status, :ts) RETURNING id"
)
_INSERT_WITHDRAWAL = (
    "INSERT INTO ex_withdrawals (id, user_id, key_id, coin, network, address, address_tag, amount, fee, status, "
    "tx_id, apply_ms, update_ms, complete_ms) VALUES (:id, :user_id, :key_id, :coin, :network, :address, "
    ":address_tag, :amount, :fee, :status, :tx_id, :apply_ms, :update_ms, :complete_ms)"
)
_INSERT_ADDRESS = (
    "INSERT INTO ex_withdraw_addresses (user_id, coin, address, label, created_ms) "
    "VALUES (:user_id, :coin, :address, :label, :created_ms) RETURNING id"
)
_WITHDRAWN_SINCE = (
    "SELECT COALESCE(SUM(amount), 0) FROM ex_withdrawals WHERE key_id = :k AND coin = :c AND apply_ms > :since"
)
_DUE = "FROM ex_withdrawals WHERE status IN (2, 4) AND update_ms <= :d"  # awaiting or processing, and due
_ADVANCE = (
    "UPDATE ex_withdrawals SET status = :n, update_ms = :t, tx_id = CASE WHEN :tx = '' THEN tx_id ELSE :tx END, "
    "complete_ms = CASE WHEN :n = 6 THEN :t ELSE complete_ms END WHERE id = :id AND status = :o"
)
# A history's table, its time column and its order, newest first (a withdrawal's id is random).
_HISTORY = {
    Deposit: ("ex_deposits", "ts", "ts DESC, id DESC"),
    Withdrawal: ("ex_withdrawals", "apply_ms", "apply_ms DESC, id"),
}
_ALLOWLIST = "SELECT coin, address FROM ex_withdraw_addresses WHERE user_id = :u"


@dataclass(frozen=True, slots=True)
class WithdrawRequest:
    coin: str
    address: str
    amount: str
    network: str = ""
    address_tag: str = ""


class WalletService:
    def __init__(
        self, db: Database, assets: dict[str, Asset], step_s: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.assets = assets
        self.step_ms = int(step_s * 1000)
        self.clock = clock
        # Called after a deposit or a withdrawal commits (the user-data streams' cue).
        self.on_commit: list[Callable[[], None]] = []

    def _committed(self) -> None:
        for listener in self.on_commit:
            listener()

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def asset(self, coin: str) -> Asset:
        asset = self.assets.get(coin.upper())
        if asset is None:
            raise BadParameter(f"Unknown coin {coin[:16]!r}: this exchange lists {', '.join(self.assets)}.")
        return asset

    @staticmethod
    def _address(asset: Asset, address: str) -> str:
        """``address`` without surrounding blanks; raises InvalidAddress unless it is one of ``asset``'s."""
        address = address.strip()
        if not asset.valid_address(address):
            raise InvalidAddress(
                f"Invalid address: {address[:100]!r} is not a valid {asset.name} ({asset.network}) address."
            )
        return address

    # -- deposits --------------------------------------------------------------------------------

    def credit(
        self, user_id: int, coin: str, amount: str, *, source: str = "admin", actor: str = "admin"
    ) -> dict[str, object]:
        """A completed deposit with its own id and txid. Raises BadParameter / IllegalCharacters."""
        asset = self.asset(coin)
        units = to_units(amount, "amount", asset)
        if units <= 0:
            raise BadParameter("A deposit amount must be positive.")
        now = self._now()
        tx_id = "kp" + secrets.token_hex(31)
        with self.db.transaction() as session:
            db = Raw(session.connection())
            row = db.one(
                _INSERT_DEPOSIT,
                {"user_id": user_id, "coin": asset.name, "network": asset.network, "amount": units,
                 "address": f"keyplane:{user_id}", "tx_id": tx_id, "source": source, "status": 1, "ts": now},
            )  # fmt: skip
            assert row is not None
            dep_id = int(row[0])
            j = L.Journal(now)
            j.move(f"deposit:{dep_id}", asset.name, L.EXTERNAL, L.available(user_id), units)
            j.apply(db)
            EV.append(db, [EV.balance_event(user_id, asset.name, units, now)])
            record(
                session, EventType.DEPOSIT_CREDITED, actor=actor, user_id=user_id,
                data={"deposit_id": int(dep_id), "coin": asset.name, "amount": asset.fmt(units), "source": source},
            )  # fmt: skip
        self._committed()
        return {"id": int(dep_id), "coin": asset.name, "amount": asset.fmt(units), "txId": tx_id}

    def faucet(self, user_id: int) -> list[dict[str, object]]:
        """Demo deposits of every asset's faucet amount."""
        return [
            self.credit(user_id, a.name, a.fmt(a.faucet_amount), source="faucet", actor=f"user:{user_id}")
            for a in self.assets.values()
            if a.faucet_amount > 0
        ]

    # -- withdrawals -----------------------------------------------------------------------------

    def withdraw(
        self,
        user_id: int,
        req: WithdrawRequest,
        *,
        key_id: str | None = None,
        daily_cap: Decimal | None = None,
        not_after_s: float | None = None,
    ) -> str:
        """Apply for a withdrawal; returns its id. ``not_after_s`` (epoch seconds: the signed
        request's timestamp + recvWindow) is checked again last, inside the transaction: a request
        whose window has passed is refused (``RecvWindowPassed``) and nothing is written."""
        asset = self.asset(req.coin)
        if req.network and req.network.upper() != asset.network:
            raise BadParameter(f"Network {req.network[:16]!r} is not available for {asset.name}; use {asset.network}.")
        units = to_units(req.amount, "amount", asset)
        if units <= 0 or units < asset.withdraw_min:
            raise WithdrawRefused(
                f"The withdrawal amount must be at least {asset.fmt(max(asset.withdraw_min, 1))} {asset.name}."
            )
        address = self._address(asset, req.address)
        now = self._now()
        wid = secrets.token_hex(16)
        with self.db.transaction() as session:
            db = Raw(session.connection())
            # Debit first: on PostgreSQL that row lock serialises this user's withdrawals, so the cap
            # and allowlist checks below see every earlier withdrawal.
            j = L.Journal(now)
            j.move(f"withdrawal:{wid}", asset.name, L.available(user_id), L.WITHDRAWING, units + asset.withdraw_fee)
            j.apply(db)
            EV.append(db, [EV.balance_event(user_id, asset.name, -(units + asset.withdraw_fee), now)])
            if daily_cap is not None and key_id is not None:
                total = db.one(_WITHDRAWN_SINCE, {"k": key_id, "c": asset.name, "since": now - DAY_MS})
                assert total is not None
                used = total[0]
                # A cap past any 64-bit amount (stored before caps were bounded) caps nothing, and is
                # never expanded into its digits.
                cap = (
                    INT64_MAX if daily_cap.adjusted() + asset.decimals >= 19 else int(daily_cap.scaleb(asset.decimals))
                )
                if int(used) + units > cap:
                    raise KeyLimitExceeded(
                        f"API key {mask(key_id)} has no operation privilege for withdrawals over its daily cap of "
                        f"{plain(daily_cap)} {asset.name}: {asset.plain(int(used))} {asset.name} already "
                        f"withdrawn in the last 24 hours, and this request asks for {asset.plain(units)} more."
                    )
            allowed = {tuple(r) for r in db.all(_ALLOWLIST, {"u": user_id})}
            if allowed and (asset.name, address) not in allowed:
                raise InvalidAddress(
                    f"Invalid address: {address[:100]} is not on this account's {asset.name} withdrawal address "
                    "allowlist; add it in the console (needs a TOTP code)."
                )
            db.execute(
                _INSERT_WITHDRAWAL,
                {"id": wid, "user_id": user_id, "key_id": key_id, "coin": asset.name, "network": asset.network,
                 "address": address, "address_tag": req.address_tag, "amount": units, "fee": asset.withdraw_fee,
                 "status": AWAITING, "tx_id": "", "apply_ms": now, "update_ms": now, "complete_ms": None},
            )  # fmt: skip
            record(
                session, EventType.WITHDRAWAL_APPLIED, actor=f"key:{key_id}" if key_id else f"user:{user_id}",
                user_id=user_id, data={"withdrawal_id": wid, "coin": asset.name, "amount": asset.fmt(units),
                                       "address": address},
            )  # fmt: skip
            check_deadline(self.clock, not_after_s, "withdrawal")
        self._committed()
        return wid

    def advance(self) -> int:
        """Move due withdrawals one step along; returns how many moved."""
        now = self._now()
        due = now - self.step_ms
        moved = 0
        with read(self.db) as db:  # the common case, nothing due, takes no write lock
            if db.one(f"SELECT 1 {_DUE} LIMIT 1", {"d": due}) is None:
                return 0
        with write(self.db) as db:
            rows = db.all(f"SELECT id, status, coin, amount, fee {_DUE}", {"d": due})
            j = L.Journal(now)
            for wid, status, coin, amount, fee in rows:
                new = PROCESSING if status == AWAITING else COMPLETED
                tx = "0x" + secrets.token_hex(32) if new == COMPLETED else ""
                won = db.rowcount(_ADVANCE, {"n": new, "t": now, "tx": tx, "id": wid, "o": status})
                if won != 1:
                    continue
                moved += 1
                if new == COMPLETED:
                    j.move(f"withdrawal:{wid}", coin, L.WITHDRAWING, L.EXTERNAL, int(amount))
                    j.move(f"withdrawal:{wid}", coin, L.WITHDRAWING, L.FEES, int(fee))
            j.apply(db)
        return moved

    # -- history ---------------------------------------------------------------------------------

    def _history(
        self, row: type[_Row], user_id: int, coin: str | None, start_ms: int | None, end_ms: int | None,
        limit: int, offset: int,
    ) -> list[_Row]:  # fmt: skip
        """``user_id``'s rows in the window (default: the 90 days up to now), newest first."""
        end = end_ms if end_ms is not None else self._now()
        start = start_ms if start_ms is not None else end - 90 * DAY_MS
        if end < start:
            raise BadParameter("startTime must not be after endTime.")
        table, time_col, order = _HISTORY[row]
        where = f"user_id = :u AND {time_col} >= :a AND {time_col} <= :b" + (" AND coin = :c" if coin else "")
        sql = f"SELECT {', '.join(row.names())} FROM {table} WHERE {where} ORDER BY {order} LIMIT :n OFFSET :o"
        args = {"u": user_id, "a": start, "b": end, "n": limit, "o": offset, "c": (coin or "").upper()}
        with read(self.db) as db:
            return [row(*r) for r in db.all(sql, args)]

    def deposits(
        self, user_id: int, *, coin: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Deposit]:  # fmt: skip
        return self._history(Deposit, user_id, coin, start_ms, end_ms, limit, offset)

    def withdrawals(
        self, user_id: int, *, coin: str | None = None, start_ms: int | None = None, end_ms: int | None = None,
        limit: int = 1000, offset: int = 0,
    ) -> list[Withdrawal]:  # fmt: skip
        return self._history(Withdrawal, user_id, coin, start_ms, end_ms, limit, offset)

    # -- the address allowlist -------------------------------------------------------------------

    def list_addresses(self, user_id: int) -> list[AllowedAddress]:
        sql = f"SELECT {', '.join(AllowedAddress.names())} FROM ex_withdraw_addresses WHERE user_id = :u ORDER BY id"
        with read(self.db) as db:
            return [AllowedAddress(*r) for r in db.all(sql, {"u": user_id})]

    def add_address(
        self, user_id: int, coin: str, address: str, label: str = "", *, step_up: StepUp | None
    ) -> dict[str, object]:
        """Add an allowed address. Needs a fresh StepUp of ``user_id`` (raises StepUpRequired).
        Adding an entry is a widening only once a list exists, but the first entry also switches the
        check on, so every change asks for the same proof."""
        require_step_up(step_up, user_id, message=_ALLOWLIST_STEP_UP)
        asset = self.asset(coin)
        address = self._address(asset, address)
        entry: dict[str, object] = {
            "coin": asset.name,
            "address": address,
            "label": label[:64],
            "created_ms": self._now(),
        }
        try:
            with self.db.transaction() as session:
                row = Raw(session.connection()).one(_INSERT_ADDRESS, {"user_id": user_id, **entry})
                assert row is not None
                new_id = row[0]
                record(session, EventType.WITHDRAW_ADDRESS_ADDED, actor=f"user:{user_id}", user_id=user_id,
                       data={"coin": asset.name, "address": address})  # fmt: skip
        except exc.IntegrityError as e:
            raise BadParameter(f"{address} is already on the {asset.name} allowlist.") from e
        return {"id": int(new_id), **entry}

    def remove_address(self, user_id: int, entry_id: int, *, step_up: StepUp | None) -> None:
        require_step_up(step_up, user_id, message=_ALLOWLIST_STEP_UP)
        with self.db.transaction() as session:
            n = Raw(session.connection()).rowcount(
                "DELETE FROM ex_withdraw_addresses WHERE id = :i AND user_id = :u", {"i": entry_id, "u": user_id}
            )
            if n != 1:
                raise NotFound("no such allowlist entry")
            record(session, EventType.WITHDRAW_ADDRESS_REMOVED, actor=f"user:{user_id}", user_id=user_id,
                   data={"entry_id": entry_id})  # fmt: skip

    # -- deposit addresses and pending withdrawals (the Binance capital endpoints) ---------------

    def deposit_address(self, user_id: int, coin: str, network: str = "") -> tuple[Asset, str]:
        """``coin``'s asset and ``user_id``'s deposit address for it (see :func:`deposit_address`).
        Raises BadParameter for an unknown coin, or a ``network`` the coin is not on."""
        asset = self.asset(coin)
        if network and network.upper() != asset.network.upper():
            raise BadParameter(f"Network {network[:16]!r} is not available for {asset.name}; use {asset.network}.")
        return asset, deposit_address(user_id, asset)

    def withdrawing(self, user_id: int) -> dict[str, int]:
        """coin -> base units (amount + fee) of ``user_id``'s withdrawals that have not completed."""
        sql = "SELECT coin, SUM(amount + fee) FROM ex_withdrawals WHERE user_id = :u AND status IN (2, 4) GROUP BY coin"
        with read(self.db) as db:
            return {str(coin): int(total) for coin, total in db.all(sql, {"u": user_id})}


def binance_time(ms: int) -> str:
    """Binance's ``applyTime`` format: ``YYYY-MM-DD HH:MM:SS`` in UTC."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _base58(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = _BASE58[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def deposit_address(user_id: int, asset: Asset) -> str:
    """``user_id``'s deposit address on ``asset``'s network: the same on every call and every node,
    different for every account, and shared by the coins of one network (ETH and USDT on ``ETH``),
    as an exchange's addresses are.

    The reference exchange is on no chain and nothing watches these addresses: a deposit is
    credited by the operator (``keyplane admin credit``) or the demo faucet. The address takes the
    first of three forms (base58; ``bc1q`` and 38 bech32 characters, with no checksum computed, so
    a wallet refuses it; ``0x`` and 40 hex digits) that the asset's ``address_pattern`` accepts,
    so that one account can withdraw to another's; the base58 form when none does.
    """
    digest = hashlib.sha256(f"keyplane deposit address v1\0{asset.network}\0{user_id}".encode()).digest()
    n = int.from_bytes(digest, "big")
    forms = (
        _base58(digest),
        "bc1q" + "".join(_BECH32[(n >> (5 * i)) & 31] for i in range(38)),
        "0x" + digest[:20].hex(),
    )
    return next((form for form in forms if asset.valid_address(form)), forms[0])
