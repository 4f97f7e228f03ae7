"""exchange: conditional orders (stop-loss and take-profit, plain or trailing): their trigger
fields on ``ex_orders`` and the armed triggers that trades fire; and OCO order lists

Revision ID: 0008_triggers
Revises: 0007_account_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_triggers"
down_revision = "0007_account_events"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("ex_orders") as t:
        t.alter_column("type", type_=sa.String(20), existing_type=sa.String(16), existing_nullable=False)
        t.add_column(sa.Column("stop_price", sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("trailing_delta", sa.Integer, nullable=False, server_default="0"))
        t.add_column(sa.Column("working_ms", sa.BigInteger, nullable=True))
        t.add_column(sa.Column("list_id", sa.BigInteger, nullable=True))
    # Every order placed so far was a plain one: it worked from the moment it was placed.
    op.execute("UPDATE ex_orders SET working_ms = created_ms")
    op.create_index(
        "ix_ex_orders_list", "ex_orders", ["list_id"], sqlite_where=sa.text("list_id IS NOT NULL"),
        postgresql_where=sa.text("list_id IS NOT NULL"),
    )  # fmt: skip
    op.create_table(
        "ex_triggers",
        sa.Column("order_id", _BIG_ID, nullable=False, autoincrement=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("side", sa.String(4), nullable=False),
        sa.Column("direction", sa.String(4), nullable=False),
        sa.Column("stop_price", sa.BigInteger, nullable=True),
        sa.Column("trail_bips", sa.Integer, nullable=True),
        sa.Column("extreme", sa.BigInteger, nullable=True),
        sa.Column("held", sa.BigInteger, nullable=False),
        sa.Column("sibling", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("order_id", name="pk_ex_triggers"),
    )
    op.create_index("ix_ex_triggers_price", "ex_triggers", ["symbol", "direction", "stop_price"])
    op.create_index("ix_ex_triggers_user", "ex_triggers", ["user_id", "symbol"])
    with op.batch_alter_table("ex_book") as t:
        t.add_column(sa.Column("sibling", sa.BigInteger, nullable=True))
    op.create_table(
        "ex_order_lists",
        sa.Column("id", _BIG_ID, nullable=False, autoincrement=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("symbol", sa.String(20), nullable=False),
        sa.Column("client_list_id", sa.String(36), nullable=False),
        sa.Column("contingency", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ex_order_lists"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_ex_order_lists_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint("user_id", "client_list_id", name="uq_ex_order_lists_client_id"),
    )
    op.create_index("ix_ex_order_lists_user", "ex_order_lists", ["user_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_ex_order_lists_user", table_name="ex_order_lists")
    op.drop_table("ex_order_lists")
    with op.batch_alter_table("ex_book") as t:
        t.drop_column("sibling")
    op.drop_index("ix_ex_orders_list", table_name="ex_orders")
    op.drop_index("ix_ex_triggers_user", table_name="ex_triggers")
    op.drop_index("ix_ex_triggers_price", table_name="ex_triggers")
    op.drop_table("ex_triggers")
    with op.batch_alter_table("ex_orders") as t:
        t.drop_column("list_id")
        t.drop_column("working_ms")
        t.drop_column("trailing_delta")
        t.drop_column("stop_price")
        t.alter_column("type", type_=sa.String(16), existing_type=sa.String(20), existing_nullable=False)
