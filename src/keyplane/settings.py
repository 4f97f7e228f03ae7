"""One typed settings object, read once from ``KEYPLANE_*`` environment variables.

A bad value fails at start-up with a message that names the variable. Secrets are ``SecretStr``
so that they never print. Call :func:`get_settings` once at the edge (CLI, app factory) and pass
the object down; nothing below the edge reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "keyplane"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KEYPLANE_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    # A plain sqlite:///... or postgresql://... URL; keyplane picks its own driver.
    database_url: str | None = None
    redis_url: str | None = None
    # Prefix for every Redis key and channel, so several deployments (or test runs) share one Redis.
    redis_prefix: str = "kp:"
    # Comma-separated base64url 32-byte keys, oldest first. Unset: a generated file in data_dir.
    master_keys: SecretStr | None = None
    # Or a keyfile that every process reads (one key per line, mode 0600), re-read when a process
    # meets a key id it lacks: a key added to it reaches running servers without a restart.
    master_keys_file: Path | None = None
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode] = ()

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    key_environment: Literal["live", "test"] = "live"

    # Signed requests (binance dialect).
    recv_window_default_ms: int = Field(default=5000, ge=1, le=60000)
    recv_window_max_ms: int = Field(default=60000, ge=1, le=60000)
    future_tolerance_ms: int = Field(default=1000, ge=0, le=60000)
    max_body_bytes: int = Field(default=65536, ge=1024)

    # Keys.
    idle_expiry_days: int = Field(default=90, ge=1)
    idle_expiry_warning_days: int = Field(default=7, ge=0)
    rotate_grace_default_s: int = Field(default=86400, ge=0)
    max_ip_allowlist: int = Field(default=30, ge=1, le=1000)

    # How often each process polls the database for changed keys, and how stale its key cache may
    # get before signed requests fail closed (the bound on revocation time without Redis).
    key_cache_poll_s: float = Field(default=0.25, gt=0, le=10)
    key_cache_max_staleness_s: float = Field(default=2.0, gt=0, le=60)
    last_used_flush_s: float = Field(default=5.0, gt=0, le=3600)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Console sessions and 2FA. Cookies get ``Secure`` when served over https, or always when
    # ``cookie_secure`` is true. Rate limits use the ``limits`` notation ("10/5minutes").
    session_idle_s: int = Field(default=1800, ge=60)
    session_absolute_s: int = Field(default=43200, ge=300)
    cookie_secure: bool = False
    totp_issuer: str = "keyplane"
    # 30-second steps accepted either side of the server's clock, for drifting phone clocks.
    totp_drift_steps: int = Field(default=1, ge=0, le=10)
    login_limit_per_user: str = "10/5minutes"
    login_limit_per_ip: str = "100/5minutes"
    totp_limit_per_user: str = "5/minute"
    totp_limit_per_ip: str = "50/minute"

    # Reference exchange: markets/assets file (JSON or TOML; built-in defaults when unset), demo mode
    # (console faucet), and how long a withdrawal waits in each state (applied -> processing -> completed).
    markets_file: Path | None = None
    demo: bool = False
    withdraw_step_s: float = Field(default=2.0, ge=0, le=3600)

    # Native signed requests (RFC 9421): how far ``created`` may lie in the past and the future.
    httpsig_past_s: int = Field(default=5, ge=1, le=300)
    httpsig_future_s: int = Field(default=1, ge=0, le=60)
    # Request rate limits in the ``limits`` notation; a route's weight is its cost. Per API key, per
    # client IP on signed routes, and per client IP on the public (unsigned) /api routes.
    rate_limit_per_key: str = "1200/minute"
    rate_limit_per_ip: str = "2400/minute"
    rate_limit_public_per_ip: str = "1200/minute"
    # Temporary lockout: this many failed authentications from one IP within the window lock that
    # IP (only that IP) out for ``lockout_s``.
    lockout_failures: int = Field(default=20, ge=1)
    lockout_window_s: int = Field(default=60, ge=1)
    lockout_s: int = Field(default=300, ge=1)
    # Audit log of auth failures: one event per (key, IP, reason) per window, carrying a count.
    audit_failure_window_s: float = Field(default=60.0, gt=0, le=86400)
    # Redis socket timeout: a slow Redis fails signed requests closed instead of stalling them.
    redis_timeout_s: float = Field(default=0.5, gt=0, le=30)
    # Database time bounds, so that a slow, locked or silent database fails requests closed (503)
    # instead of hanging them. Connecting (PostgreSQL); one statement, or a lock wait (PostgreSQL's
    # statement_timeout and idle_in_transaction_session_timeout, SQLite's busy timeout; a PostgreSQL
    # connection whose server stays silent longer than this is cut); waiting for a pooled
    # connection; and how long /healthz waits for the database before it reports it unhealthy.
    db_connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    db_statement_timeout_s: float = Field(default=5.0, gt=0, le=600)
    db_pool_timeout_s: float = Field(default=2.0, gt=0, le=60)
    healthz_timeout_s: float = Field(default=1.0, gt=0, le=30)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_proxies(cls, value: object) -> tuple[IPNetwork, ...]:
        if value is None or value == "":
            return ()
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        nets: list[IPNetwork] = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError as e:
                raise ValueError(f"not an IP address or CIDR: {text!r}") from e
        return tuple(nets)

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver keyplane uses for it."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'keyplane.db'}"
        scheme, rest = url.split("://", 1)
        base = scheme.split("+", 1)[0]
        if base in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
        return f"sqlite+pysqlite://{rest}"

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def embedded(self) -> bool:
        """True when nothing outside this machine holds state: SQLite and no Redis."""
        return self.is_sqlite and not self.redis_url


def get_settings(**overrides: object) -> Settings:
    """Read the environment once. Overrides are for tests and the CLI."""
    return Settings(**overrides)  # type: ignore[arg-type]
