"""exchange: markets, balances, ledger, orders, book, trades, fills, deposits, withdrawals

Revision ID: 0004_exchange
Revises: 0001_core
"""

from __future__ import annotations

from alembic import op

revision = "0004_exchange"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The first revision of these tables is their definition in keyplane.exchange.models (the same
    # columns, constraints and indexes); later changes get their own revisions with explicit ops.
    from keyplane.exchange.models import ALL_TABLES, md

    md.create_all(op.get_bind(), tables=list(ALL_TABLES))


def downgrade() -> None:
    from keyplane.exchange.models import ALL_TABLES, md

    md.drop_all(op.get_bind(), tables=list(reversed(ALL_TABLES)))
