from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from keyplane.db import Base, UTCDateTime, utcnow


class ApiKey(Base):
    """One API key. The secret is never stored: an hmac key holds an AES-GCM ciphertext of it,
    an ed25519 key holds only the user's public key."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    key_type: Mapped[str] = mapped_column(String(16))  # hmac | ed25519
    secret_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True)
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)  # base64 raw 32 bytes
    # The credential that a rotation replaced; it keeps working until previous_valid_until.
    previous_secret_ciphertext: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_valid_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    scopes: Mapped[str] = mapped_column(String(64))  # "read,trade"
    ip_allowlist: Mapped[str] = mapped_column(Text, default="")  # comma-separated CIDRs
    symbols: Mapped[str] = mapped_column(Text, default="")  # comma-separated
    max_notional: Mapped[str | None] = mapped_column(String(64), nullable=True)  # Decimal text
    daily_withdraw_cap: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)

    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled | revoked
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When the idle-expiry warning was last recorded, so it is recorded once per idle spell.
    idle_warned_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (Index("ix_api_keys_updated_at", "updated_at"),)

    def __repr__(self) -> str:
        return f"ApiKey(public_id={self.public_id[:12]!r}…, type={self.key_type!r}, status={self.status!r})"
