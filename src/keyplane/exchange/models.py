"""Exchange tables. Amounts are integers in each asset's base units; times are epoch milliseconds
(the unit of every Binance timestamp). The CHECK constraints make a negative balance impossible even
if a service had a bug.

``ex_book`` holds only resting orders, indexed in matching order, so matching reads the best few
rows and never the whole book. ``ex_orders`` keeps every order for history.
"""

from __future__ import annotations

import sqlalchemy as sa

from keyplane.accounts import models as _accounts  # noqa: F401  (the users table our foreign keys name)
from keyplane.db import Base

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
md = Base.metadata

markets = sa.Table(
    "ex_markets",
    md,
    sa.Column("symbol", sa.String(20), primary_key=True),
    # Last trade id in this market (Binance trade ids are per symbol). The row is also the market's
    # matching lock on PostgreSQL (SELECT ... FOR UPDATE).
    sa.Column("trade_seq", sa.BigInteger, nullable=False, server_default="0"),
    # Bumped by every transaction that changes this market's book: the update id of depth
    # snapshots (REST lastUpdateId) and of diff-depth stream events (U/u).
    sa.Column("book_seq", sa.BigInteger, nullable=False, server_default="0"),
)

# The price levels (side, price) that each book change (``ex_markets.book_seq``) touched; a recent
# window of it, pruned by the market streams (keyplane.streams.hub).
book_changes = sa.Table(
    "ex_book_changes",
    md,
    sa.Column("symbol", sa.String(20), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("side", sa.String(4), primary_key=True),
    sa.Column("price", sa.BigInteger, primary_key=True),
)

# What happened to each account, in commit order per order: the log the user-data streams read
# (executionReport, outboundAccountPosition, balanceUpdate; keyplane.streams.userfeed). Written in
# the transaction that made the change; a recent window of it is kept (pruned by the streams).
account_events = sa.Table(
    "ex_account_events",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    # An order's execution type (NEW, TRADE, CANCELED, EXPIRED, TRADE_PREVENTION), or BALANCE
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=True),  # the order's status after this event
    sa.Column("order_id", sa.BigInteger, nullable=True),
    sa.Column("trade_id", sa.BigInteger, nullable=True),  # TRADE: the fill (ex_fills order_id, trade_id)
    sa.Column("asset", sa.String(16), nullable=True),  # BALANCE: the asset and the signed change
    sa.Column("delta", sa.BigInteger, nullable=True),
)

# The listenKeys of REST user-data streams (``POST /api/v3/userDataStream``): a bearer token for one
# key's account stream, stored as its SHA-256 (a listenKey travels in a URL, so it is a secret).
listen_keys = sa.Table(
    "ex_listen_keys",
    md,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
    sa.Index("ix_ex_listen_keys_key", "key_id"),
)

balances = sa.Table(
    "ex_balances",
    md,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("asset", sa.String(16), primary_key=True),
    sa.Column("available", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("locked", sa.BigInteger, nullable=False, server_default="0"),
    sa.CheckConstraint("available >= 0", name="available_nonneg"),
    sa.CheckConstraint("locked >= 0", name="locked_nonneg"),
)

ledger = sa.Table(
    "ex_ledger",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    # What the entries belong to: "order:12", "trade:BTCUSDT:7", "deposit:3", "withdrawal:<id>".
    sa.Column("ref", sa.String(80), nullable=False),
    sa.Column("asset", sa.String(16), nullable=False),
    # "user:<id>:available", "user:<id>:locked", "fees", "withdrawing", "external".
    sa.Column("account", sa.String(40), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
)

orders = sa.Table(
    "ex_orders",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("type", sa.String(20), nullable=False),  # TAKE_PROFIT_LIMIT is 17 characters
    sa.Column("tif", sa.String(4), nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),  # 0 for market orders
    sa.Column("orig_qty", sa.BigInteger, nullable=False),
    sa.Column("orig_quote_qty", sa.BigInteger, nullable=False),
    sa.Column("executed_qty", sa.BigInteger, nullable=False),
    sa.Column("cum_quote", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("client_order_id", sa.String(36), nullable=False),
    sa.Column("stp", sa.String(16), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    # Conditional orders (STOP_LOSS[_LIMIT], TAKE_PROFIT[_LIMIT]): the trigger price (0: none) and
    # the trailing delta in basis points (0: none). ``working_ms`` is when the order started to work
    # (placed, for a plain order; triggered, for a conditional one); NULL while a trigger is armed.
    sa.Column("stop_price", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("trailing_delta", sa.Integer, nullable=False, server_default="0"),
    sa.Column("working_ms", sa.BigInteger, nullable=True),
    sa.Column("list_id", sa.BigInteger, nullable=True),  # the order list (OCO) it belongs to
    sa.UniqueConstraint("user_id", "client_order_id", name="uq_ex_orders_client_id"),
    # Only the few orders that belong to a list are indexed: a plain order pays no index entry.
    sa.Index(
        "ix_ex_orders_list",
        "list_id",
        sqlite_where=sa.text("list_id IS NOT NULL"),
        postgresql_where=sa.text("list_id IS NOT NULL"),
    ),
)

# Order lists: an OCO pair ("one cancels the other") of orders in one market. When either leg
# trades or fires, or is cancelled, the other is cancelled in the same transaction.
order_lists = sa.Table(
    "ex_order_lists",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("client_list_id", sa.String(36), nullable=False),
    sa.Column("contingency", sa.String(8), nullable=False),  # OCO
    sa.Column("status", sa.String(16), nullable=False),  # EXEC_STARTED | ALL_DONE (Binance's listStatusType)
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("user_id", "client_list_id", name="uq_ex_order_lists_client_id"),
    sa.Index("ix_ex_order_lists_user", "user_id", "id"),
)

# The armed triggers of conditional orders: one row per order that waits for its stop price, read
# after every trade in its market (keyplane.exchange.triggers). ``direction`` UP fires on a trade at
# or above ``stop_price``, DOWN at or below. A trailing order (``trail_bips``) is active once its
# activation price (``stop_price``) has traded, or at once without one; ``extreme`` is then the best
# price traded since (highest for a sell, lowest for a buy), and it fires when a trade retraces
# ``trail_bips`` from it. ``held`` is what the order keeps locked while it waits (an
# OCO leg: what its list needs beyond what the other leg holds).
triggers = sa.Table(
    "ex_triggers",
    md,
    sa.Column("order_id", BigId, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("direction", sa.String(4), nullable=False),
    sa.Column("stop_price", sa.BigInteger, nullable=True),
    sa.Column("trail_bips", sa.Integer, nullable=True),
    sa.Column("extreme", sa.BigInteger, nullable=True),
    sa.Column("held", sa.BigInteger, nullable=False),
    sa.Column("sibling", sa.BigInteger, nullable=True),  # the other leg of its OCO list, or NULL
    sa.Index("ix_ex_triggers_price", "symbol", "direction", "stop_price"),
    sa.Index("ix_ex_triggers_user", "user_id", "symbol"),
)

book = sa.Table(
    "ex_book",
    md,
    sa.Column("order_id", BigId, primary_key=True),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    # price for asks, -price for bids: ascending sort_key, then order id, is price-time priority.
    sa.Column("sort_key", sa.BigInteger, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("remaining", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.Integer, nullable=False),
    # The other leg of the order's OCO list (its trade cancels that leg), or NULL.
    sa.Column("sibling", sa.BigInteger, nullable=True),
    sa.CheckConstraint("remaining > 0", name="remaining_pos"),
    sa.Index("ix_ex_book_match", "symbol", "side", "sort_key", "order_id"),
    sa.Index("ix_ex_book_user", "user_id", "symbol"),
)

trades = sa.Table(
    "ex_trades",
    md,
    sa.Column("symbol", sa.String(20), primary_key=True),
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("qty", sa.BigInteger, nullable=False),
    sa.Column("quote_qty", sa.BigInteger, nullable=False),
    sa.Column("buyer_order_id", sa.BigInteger, nullable=False),
    sa.Column("seller_order_id", sa.BigInteger, nullable=False),
    sa.Column("buyer_is_maker", sa.Boolean, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_ex_trades_time", "symbol", "ts"),
)

fills = sa.Table(
    "ex_fills",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, nullable=False),
    sa.Column("symbol", sa.String(20), nullable=False),
    sa.Column("trade_id", sa.BigInteger, nullable=False),
    sa.Column("order_id", sa.BigInteger, nullable=False),
    sa.Column("is_buyer", sa.Boolean, nullable=False),
    sa.Column("is_maker", sa.Boolean, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("qty", sa.BigInteger, nullable=False),
    sa.Column("quote_qty", sa.BigInteger, nullable=False),
    sa.Column("commission", sa.BigInteger, nullable=False),
    sa.Column("commission_asset", sa.String(16), nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.Index("ix_ex_fills_user", "user_id", "symbol", "trade_id"),
    sa.Index("ix_ex_fills_order", "order_id"),
)

deposits = sa.Table(
    "ex_deposits",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("coin", sa.String(16), nullable=False),
    sa.Column("network", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("address", sa.String(128), nullable=False),
    sa.Column("tx_id", sa.String(80), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # admin | faucet
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("ts", sa.BigInteger, nullable=False),
    sa.CheckConstraint("amount > 0", name="amount_pos"),
    sa.Index("ix_ex_deposits_user", "user_id", "ts"),
)

withdrawals = sa.Table(
    "ex_withdrawals",
    md,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("coin", sa.String(16), nullable=False),
    sa.Column("network", sa.String(16), nullable=False),
    sa.Column("address", sa.String(128), nullable=False),
    sa.Column("address_tag", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("fee", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),  # Binance: 2 awaiting, 4 processing, 6 completed
    sa.Column("tx_id", sa.String(80), nullable=False),
    sa.Column("apply_ms", sa.BigInteger, nullable=False),
    sa.Column("update_ms", sa.BigInteger, nullable=False),
    sa.Column("complete_ms", sa.BigInteger, nullable=True),
    sa.CheckConstraint("amount > 0", name="amount_pos"),
    sa.Index("ix_ex_withdrawals_user", "user_id", "apply_ms"),
    sa.Index("ix_ex_withdrawals_status", "status"),
)

withdraw_addresses = sa.Table(
    "ex_withdraw_addresses",
    md,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("coin", sa.String(16), nullable=False),
    sa.Column("address", sa.String(128), nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("user_id", "coin", "address", name="uq_ex_withdraw_addresses_entry"),
)

ALL_TABLES = (
    markets,
    balances,
    ledger,
    orders,
    order_lists,
    book,
    triggers,
    book_changes,
    account_events,
    listen_keys,
    trades,
    fills,
    deposits,
    withdrawals,
    withdraw_addresses,
)
