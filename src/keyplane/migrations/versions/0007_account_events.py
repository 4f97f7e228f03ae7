"""exchange: the account event log that user-data streams read (executionReport, balanceUpdate...),
and the listenKeys of REST user-data streams

Revision ID: 0007_account_events
Revises: 0006_book_seq
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_account_events"
down_revision = "0006_book_seq"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ex_account_events",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("ts", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=True),
        sa.Column("order_id", sa.BigInteger, nullable=True),
        sa.Column("trade_id", sa.BigInteger, nullable=True),
        sa.Column("asset", sa.String(16), nullable=True),
        sa.Column("delta", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_ex_account_events"),
    )

    op.create_table(
        "ex_listen_keys",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_ex_listen_keys"),
    )
    op.create_index("ix_ex_listen_keys_key", "ex_listen_keys", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_ex_listen_keys_key", table_name="ex_listen_keys")
    op.drop_table("ex_listen_keys")
    op.drop_table("ex_account_events")
