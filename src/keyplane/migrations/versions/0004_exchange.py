"""exchange: markets, balances, ledger, orders, book, trades, fills, deposits, withdrawals

Revision ID: 0004_exchange
Revises: 0001_core

Frozen DDL: the tables exactly as keyplane.exchange.models first defined them (constraint names
spelled out as keyplane.db.NAMING produced them). A later model change gets its own revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_exchange"
down_revision = "0001_core"
branch_labels = None
depends_on = None

# BIGINT (BIGSERIAL when it is a lone primary key) on PostgreSQL; INTEGER on SQLite, where an
# INTEGER PRIMARY KEY is the rowid.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_INDEXES = (
    ("ix_ex_book_match", "ex_book", ["symbol", "side", "sort_key", "order_id"]),
    ("ix_ex_book_user", "ex_book", ["user_id", "symbol"]),
    ("ix_ex_trades_time", "ex_trades", ["symbol", "ts"]),
    ("ix_ex_fills_user", "ex_fills", ["user_id", "symbol", "trade_id"]),
    ("ix_ex_fills_order", "ex_fills", ["order_id"]),
    ("ix_ex_deposits_user", "ex_deposits", ["user_id", "ts"]),
    ("ix_ex_withdrawals_user", "ex_withdrawals", ["user_id", "apply_ms"]),
    ("ix_ex_withdrawals_status", "ex_withdrawals", ["status"]),
)
_TABLES = (
    "ex_markets",
    "ex_balances",
    "ex_ledger",
    "ex_orders",
    "ex_book",
    "ex_trades",
    "ex_fills",
    "ex_deposits",
    "ex_withdrawals",
    "ex_withdraw_addresses",
)


def _user_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "ex_markets",
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("trade_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("symbol", name="pk_ex_markets"),
    )
    op.create_table(
        "ex_balances",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("available", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("locked", sa.BigInteger, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("user_id", "asset", name="pk_ex_balances"),
        sa.CheckConstraint("available >= 0", name="ck_ex_balances_available_nonneg"),
        sa.CheckConstraint("locked >= 0", name="ck_ex_balances_locked_nonneg"),
        _user_fk("ex_balances"),
    )
    op.create_table(
        "ex_ledger",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("ref", sa.String(80), nullable=False),
        sa.Column("asset", sa.String(16), nullable=False),
        sa.Column("account", sa.String(40), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ex_ledger"),
    )
    op.create_table(
        "ex_orders",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("tif", sa.String(4), nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("orig_qty", sa.BigInteger, nullable=False),
        sa.Column("orig_quote_qty", sa.BigInteger, nullable=False),
        sa.Column("executed_qty", sa.BigInteger, nullable=False),
        sa.Column("cum_quote", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("client_order_id", sa.String(36), nullable=False),
        sa.Column("stp", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ex_orders"),
        sa.UniqueConstraint("user_id", "client_order_id", name="uq_ex_orders_client_id"),
        _user_fk("ex_orders"),
    )
    op.create_table(
        "ex_book",
        # A lone integer primary key: BIGSERIAL on PostgreSQL, as the model made it.
        sa.Column("order_id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("sort_key", sa.BigInteger, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("remaining", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("order_id", name="pk_ex_book"),
        sa.CheckConstraint("remaining > 0", name="ck_ex_book_remaining_pos"),
    )
    op.create_table(
        "ex_trades",
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("qty", sa.BigInteger, nullable=False),
        sa.Column("quote_qty", sa.BigInteger, nullable=False),
        sa.Column("buyer_order_id", sa.BigInteger, nullable=False),
        sa.Column("seller_order_id", sa.BigInteger, nullable=False),
        sa.Column("buyer_is_maker", sa.Boolean, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "id", name="pk_ex_trades"),
    )
    op.create_table(
        "ex_fills",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
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
        sa.PrimaryKeyConstraint("id", name="pk_ex_fills"),
    )
    op.create_table(
        "ex_deposits",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("coin", sa.String(16), nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("address", sa.String(128), nullable=False),
        sa.Column("tx_id", sa.String(80), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ex_deposits"),
        sa.CheckConstraint("amount > 0", name="ck_ex_deposits_amount_pos"),
        _user_fk("ex_deposits"),
    )
    op.create_table(
        "ex_withdrawals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("coin", sa.String(16), nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("address", sa.String(128), nullable=False),
        sa.Column("address_tag", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("fee", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("tx_id", sa.String(80), nullable=False),
        sa.Column("apply_ms", sa.BigInteger, nullable=False),
        sa.Column("update_ms", sa.BigInteger, nullable=False),
        sa.Column("complete_ms", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ex_withdrawals"),
        sa.CheckConstraint("amount > 0", name="ck_ex_withdrawals_amount_pos"),
        _user_fk("ex_withdrawals"),
    )
    op.create_table(
        "ex_withdraw_addresses",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("coin", sa.String(16), nullable=False),
        sa.Column("address", sa.String(128), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ex_withdraw_addresses"),
        sa.UniqueConstraint("user_id", "coin", "address", name="uq_ex_withdraw_addresses_entry"),
        _user_fk("ex_withdraw_addresses"),
    )
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
    for table in reversed(_TABLES):
        op.drop_table(table)
