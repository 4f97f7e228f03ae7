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


def _schema(engine: sa.Engine) -> dict[str, dict[str, object]]:
    """Each exchange table's structure as SQLite reports it: columns (name, type, nullability,
    default), primary key, foreign keys, unique constraints, checks and indexes. (Structure, not
    DDL text: a migration that rebuilds a table on SQLite writes the same table in other words.)"""
    insp = sa.inspect(engine)
    out: dict[str, dict[str, object]] = {}
    for table in sorted(t for t in insp.get_table_names() if t.startswith("ex_")):
        out[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"], c["default"]) for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    f.get("options", {}).get("ondelete"),
                )
                for f in insp.get_foreign_keys(table)
            ),
            "uniques": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)),
            "checks": sorted(re.sub(r"\s+", " ", c["sqltext"]) for c in insp.get_check_constraints(table)),
            "indexes": sorted(  # a partial index's WHERE clause too
                (
                    i["name"],
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    str(i.get("dialect_options", {}).get("sqlite_where", "")),
                )
                for i in insp.get_indexes(table)
            ),
        }
    return out


def test_the_migrations_build_the_tables_the_models_describe(tmp_path: Path) -> None:
    migrated = sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}")
    upgrade(migrated)
    described = sa.create_engine(f"sqlite:///{tmp_path / 'models.db'}")
    md.create_all(described, tables=list(ALL_TABLES))
    assert len(_schema(migrated)) == len(ALL_TABLES)
    assert _schema(migrated) == _schema(described)
