"""keys: the row that names the active master key

Revision ID: 0005_master_keyring
Revises: 0001_core
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.db import UTCDateTime

revision = "0005_master_keyring"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "master_keyring",
        sa.Column("id", sa.Integer, primary_key=True),
        # The id (8 hex digits of its SHA-256) of the key that seals new secrets; never the key.
        sa.Column("active_key_id", sa.String(16), nullable=True),
        sa.Column("changed_at", UTCDateTime, nullable=True),
    )
    # Named at the first start-up after this migration: the newest key that process holds.
    op.bulk_insert(table, [{"id": 1, "active_key_id": None, "changed_at": None}])


def downgrade() -> None:
    op.drop_table("master_keyring")
