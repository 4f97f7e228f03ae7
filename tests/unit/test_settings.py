from __future__ import annotations

import pytest
from pydantic import ValidationError

from keyplane.settings import Settings


def test_driver_is_picked_from_a_plain_url(tmp_path):
    assert Settings(data_dir=tmp_path).sqlalchemy_url == f"sqlite+pysqlite:///{tmp_path}/keyplane.db"
    assert Settings(database_url="postgresql://u@h/db").sqlalchemy_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgres://u@h/db").sqlalchemy_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="sqlite:////tmp/x.db").is_sqlite


def test_bad_values_fail_at_start_up(monkeypatch):
    monkeypatch.setenv("KEYPLANE_TRUSTED_PROXIES", "10.0.0.0/8, not-an-ip")
    with pytest.raises(ValidationError, match="not-an-ip"):
        Settings()
    monkeypatch.delenv("KEYPLANE_TRUSTED_PROXIES")
    with pytest.raises(ValidationError):
        Settings(database_url="mysql://x")
    with pytest.raises(ValidationError):
        Settings(recv_window_max_ms=70000)


def test_trusted_proxies_from_the_environment(monkeypatch):
    monkeypatch.setenv("KEYPLANE_TRUSTED_PROXIES", "10.0.0.0/8,::1")
    assert [str(n) for n in Settings().trusted_proxies] == ["10.0.0.0/8", "::1/128"]


def test_master_keys_never_print(monkeypatch):
    monkeypatch.setenv("KEYPLANE_MASTER_KEYS", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI")
    s = Settings()
    assert "c2VjcmV0" not in repr(s) and "c2VjcmV0" not in str(s.model_dump())
