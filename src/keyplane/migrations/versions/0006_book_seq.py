"""exchange: a per-market book sequence (the update id of depth snapshots and diff-depth streams)
and the log of the price levels each sequence number touched

Revision ID: 0006_book_seq
Revises: 0004_exchange
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_book_seq"
down_revision = "0004_exchange"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ex_markets") as t:
        t.add_column(sa.Column("book_seq", sa.BigInteger, nullable=False, server_default="0"))
    # The depth snapshot's update id used to be max(trade sequence, newest resting order id): start
    # the new counter there, so that an update id a client holds never goes backwards.
    op.execute(
        "UPDATE ex_markets SET book_seq = COALESCE((SELECT MAX(order_id) FROM ex_book "
        "WHERE ex_book.symbol = ex_markets.symbol), 0) "
        "WHERE COALESCE((SELECT MAX(order_id) FROM ex_book WHERE ex_book.symbol = ex_markets.symbol), 0) > trade_seq"
    )
    op.execute("UPDATE ex_markets SET book_seq = trade_seq WHERE book_seq < trade_seq")
    # Which levels each book change touched: a diff-depth event names every level that changed
    # within its update ids, also one that appeared and went again between two reads of the book.
    op.create_table(
        "ex_book_changes",
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("symbol", "seq", "side", "price", name="pk_ex_book_changes"),
    )


def downgrade() -> None:
    op.drop_table("ex_book_changes")
    with op.batch_alter_table("ex_markets") as t:
        t.drop_column("book_seq")
