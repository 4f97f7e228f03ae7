"""The typed rows read like the dict rows they replaced, and the migrated schema is the models'."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from keyplane.exchange.models import ALL_TABLES, md
from keyplane.exchange.rows import AccountTrade, Deposit, Withdrawal
from keyplane.migrations import upgrade


def test_a_row_is_a_read_only_mapping_of_its_columns() -> None:
    d = Deposit(7, "BTC", "BTC", 5, "addr", "kp00", 1, 1_700_000_000_000)
    assert dict(d) == d.as_dict() == {
        "id": 7, "coin": "BTC", "network": "BTC", "amount": 5, "address": "addr", "tx_id": "kp00", "status": 1,
        "ts": 1_700_000_000_000,
    }  # fmt: skip
    assert d["coin"] == d.coin == "BTC" and {**d, "amount": "x"}["amount"] == "x"
    assert list(Withdrawal.names())[-1] == "complete_ms" and "id" in AccountTrade.names()
    try:
        d["nope"]
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown column is a KeyError")


def _ddl(engine: sa.Engine) -> list[tuple[str, str]]:
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE tbl_name LIKE 'ex\\_%' ESCAPE '\\'")).all()
    return sorted((name, re.sub(r"\s+", " ", sql or "")) for name, sql in rows)


def test_the_migrations_build_the_tables_the_models_describe(tmp_path: Path) -> None:
    migrated = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    upgrade(migrated)
    described = sa.create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    md.create_all(described, tables=list(ALL_TABLES))
    assert len(_ddl(migrated)) > len(ALL_TABLES)
    assert _ddl(migrated) == _ddl(described)
