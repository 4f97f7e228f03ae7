"""core: users, api keys, audit log

Revision ID: 0001_core
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keyplane.db import UTCDateTime

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def _seq() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_users_email", "users", ["email"], unique=True)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("public_id", sa.String(64), nullable=False, unique=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("secret_ciphertext", sa.Text),
        sa.Column("public_key", sa.Text),
        sa.Column("previous_secret_ciphertext", sa.Text),
        sa.Column("previous_public_key", sa.Text),
        sa.Column("previous_valid_until", UTCDateTime),
        sa.Column("scopes", sa.String(64), nullable=False),
        sa.Column("ip_allowlist", sa.Text, nullable=False),
        sa.Column("symbols", sa.Text, nullable=False),
        sa.Column("max_notional", sa.String(64)),
        sa.Column("daily_withdraw_cap", sa.String(64)),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime),
        sa.Column("rotated_at", UTCDateTime),
        sa.Column("last_used_at", UTCDateTime),
        sa.Column("last_used_ip", sa.String(64)),
        sa.Column("idle_warned_at", UTCDateTime),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_index("ix_api_keys_updated_at", "api_keys", ["updated_at"])
    op.create_table(
        "audit_events",
        sa.Column("seq", _seq(), primary_key=True, autoincrement=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("key_id", sa.String(64)),
        sa.Column("ip", sa.String(64)),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_events_user_id_seq", "audit_events", ["user_id", "seq"])
    op.create_index("ix_audit_events_key_id_seq", "audit_events", ["key_id", "seq"])
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", _seq(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_events")
    op.drop_table("api_keys")
    op.drop_table("users")
