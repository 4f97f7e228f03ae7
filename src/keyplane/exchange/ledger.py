"""The double-entry journal of one database transaction.

A service records movements with :meth:`Journal.move`; each movement is two entries of opposite sign
in one asset, so every journal balances by construction. Entries on a user's ``available`` or
``locked`` account also change that user's row in ``ex_balances``: :meth:`Journal.apply` writes the
entries and the balance changes together, inside the caller's transaction, and fails if any balance
would go negative (the CHECK constraints are a second line of defence).

System accounts: ``external`` (the world outside the exchange: deposits come from it, withdrawals go
to it), ``fees`` (trading and withdrawal fees), ``withdrawing`` (funds of withdrawals in flight).
Per asset, the sum of every account except ``external`` is deposits minus withdrawals.
"""

from __future__ import annotations

from collections import defaultdict

from keyplane.exchange.errors import InsufficientBalance
from keyplane.exchange.sql import Raw

EXTERNAL, FEES, WITHDRAWING = "external", "fees", "withdrawing"

_UPSERT = (
    "INSERT INTO ex_balances (user_id, asset, available, locked) VALUES (:u, :a, :da, :dl) "
    "ON CONFLICT (user_id, asset) DO UPDATE SET available = ex_balances.available + excluded.available, "
    "locked = ex_balances.locked + excluded.locked"
)
_DEBIT = (
    "UPDATE ex_balances SET available = available + :da, locked = locked + :dl "
    "WHERE user_id = :u AND asset = :a AND available + :da >= 0 AND locked + :dl >= 0"
)
_ENTRY = "INSERT INTO ex_ledger (ref, asset, account, amount, ts) VALUES (:ref, :asset, :account, :amount, :ts)"


def available(user_id: int) -> str:
    return f"user:{user_id}:available"


def locked(user_id: int) -> str:
    return f"user:{user_id}:locked"


def _user_slot(account: str) -> tuple[int, int] | None:
    """(user id, 0 for available / 1 for locked) for a user account, else None."""
    if not account.startswith("user:"):
        return None
    _, uid, kind = account.split(":")
    return int(uid), 0 if kind == "available" else 1


class Journal:
    def __init__(self, ts_ms: int) -> None:
        self.ts = ts_ms
        self.entries: list[dict[str, object]] = []
        self.deltas: dict[tuple[int, str], list[int]] = defaultdict(lambda: [0, 0])

    def move(self, ref: str, asset: str, src: str, dst: str, amount: int) -> None:
        """Move ``amount`` base units of ``asset`` from ``src`` to ``dst`` (two balancing entries)."""
        if amount == 0:
            return
        if amount < 0:
            raise ValueError("a movement amount is never negative")
        for account, signed in ((src, -amount), (dst, amount)):
            self.entries.append({"ref": ref, "asset": asset, "account": account, "amount": signed, "ts": self.ts})
            slot = _user_slot(account)
            if slot is not None:
                self.deltas[(slot[0], asset)][slot[1]] += signed

    def apply(self, db: Raw) -> None:
        """Write the balance changes (in a fixed order, so concurrent writers cannot deadlock on
        each other's rows) and then the entries. Raises InsufficientBalance if any balance would go
        negative; the caller's transaction then rolls back."""
        for (uid, asset), (da, dl) in sorted(self.deltas.items()):
            if da == 0 and dl == 0:
                continue
            params = {"u": uid, "a": asset, "da": da, "dl": dl}
            if da >= 0 and dl >= 0:
                db.execute(_UPSERT, params)
            elif db.rowcount(_DEBIT, params) != 1:
                raise InsufficientBalance()
        db.many(_ENTRY, self.entries)
