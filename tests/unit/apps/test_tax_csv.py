"""CSV import: the documented format, idempotency, and one-line errors naming line and field."""

from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyplane.apps.tax.csvimport import CsvError, read
from keyplane.apps.tax.ledger import Ledger
from keyplane.cli import app

GOOD = """date,side,symbol,amount,price,cost,fee,fee_asset,fee_value,id
2026-01-05T10:00:00Z,buy,BTC/USDT,0.5,40000,,20,USDT,,t1
2026-02-01 12:00:00,sell,BTC/USDT,0.25,,11000,0.1,BNB,30,t2
2026-02-02,buy,ETH/USDT,1,2000,,,,,
"""


def test_reads_the_documented_columns(tmp_path: Path) -> None:
    f = tmp_path / "trades.csv"
    f.write_text(GOOD)
    t1, t2, t3 = read(f, "csv:mine")
    assert (t1.id, t1.side, t1.base, t1.quote, t1.amount, t1.cost, t1.fee, t1.fee_asset) == (
        "t1",
        "buy",
        "BTC",
        "USDT",
        D("0.5"),
        D("20000.0"),
        D(20),
        "USDT",
    )
    assert (t2.cost, t2.fee_asset, t2.fee_value) == (D(11000), "BNB", D(30))
    assert t3.id.startswith("csv-") and t3.fee == 0 and t3.fee_asset is None


@pytest.mark.parametrize(
    ("row", "line", "field"),
    [
        ("yesterday,buy,BTC/USDT,1,100,,,,,x", 2, "date"),
        ("2026-01-01,hold,BTC/USDT,1,100,,,,,x", 2, "side"),
        ("2026-01-01,buy,BTCUSDT,1,100,,,,,x", 2, "symbol"),
        ("2026-01-01,buy,BTC/USDT,-1,100,,,,,x", 2, "amount"),
        ("2026-01-01,buy,BTC/USDT,abc,100,,,,,x", 2, "amount"),
        ("2026-01-01,buy,BTC/USDT,1,,,,,,x", 2, "price"),
        ("2026-01-01,buy,BTC/USDT,1,100,,1,,,x", 2, "fee_asset"),
        ("2026-01-01,buy,BTC/USDT,1,100,,NaN,BTC,,x", 2, "fee"),
    ],
)
def test_a_bad_row_names_its_line_and_field(tmp_path: Path, row: str, line: int, field: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(GOOD.splitlines()[0] + "\n" + row + "\n")
    with pytest.raises(CsvError) as e:
        read(f, "x")
    assert f"bad.csv:{line}: field '{field}'" in str(e.value)


def test_cli_import_is_idempotent_and_errors_are_one_line(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite"
    f = tmp_path / "trades.csv"
    f.write_text(GOOD)
    runner = CliRunner()
    env = {"KEYPLANE_HOLDER_DIR": str(tmp_path)}
    first = runner.invoke(app, ["tax", "import", "--format", "csv", str(f), "--ledger", str(ledger)], env=env)
    assert first.exit_code == 0, first.output
    assert "imported 3 new trade(s)" in first.output
    again = runner.invoke(app, ["tax", "import", "--format", "csv", str(f), "--ledger", str(ledger)], env=env)
    assert "imported 0 new trade(s) of 3" in again.output
    with Ledger(ledger) as lg:
        assert lg.counts()["trades"] == 3

    bad = tmp_path / "bad.csv"
    bad.write_text(GOOD + "2026-03-01,buy,BTC/USDT,1,oops,,,,,t9\n")
    res = runner.invoke(app, ["tax", "import", "--format", "csv", str(bad), "--ledger", str(ledger)], env=env)
    assert res.exit_code == 2
    assert "bad.csv:5: field 'price'" in res.output
    assert "Traceback" not in res.output
    with Ledger(ledger) as lg:
        assert lg.counts()["trades"] == 3  # nothing from the bad file was stored

    res = runner.invoke(app, ["tax", "report", "--method", "lifo-ish", "--ledger", str(ledger)], env=env)
    assert res.exit_code == 2 and "unknown tax method 'lifo-ish'" in res.output
    res = runner.invoke(app, ["tax", "report", "--year", "0", "--ledger", str(ledger)], env=env)
    assert res.exit_code == 2 and "Invalid value for '--year'" in res.output and "Traceback" not in res.output
    (tmp_path / "taken").write_text("a file, not a directory")
    unwritable = tmp_path / "taken" / "gains.csv"
    res = runner.invoke(app, ["tax", "report", "--out", str(unwritable), "--ledger", str(ledger)], env=env)
    assert res.exit_code == 2
    assert f"cannot write the report to {unwritable}" in res.output and "Traceback" not in res.output
    missing = tmp_path / "none.sqlite"
    res = runner.invoke(app, ["tax", "report", "--ledger", str(missing)], env=env)
    assert res.exit_code == 2 and f"no ledger at {missing}" in res.output and not missing.exists()
    (tmp_path / "garbage.sqlite").write_bytes(b"not a ledger at all" * 100)
    res = runner.invoke(app, ["tax", "report", "--ledger", str(tmp_path / "garbage.sqlite")], env=env)
    assert res.exit_code == 2 and "cannot open the ledger (file is not a database)" in res.output

    out = tmp_path / "gains.csv"
    res = runner.invoke(
        app,
        ["tax", "report", "--method", "fifo", "--year", "2026", "--out", str(out), "--ledger", str(ledger)],
        env=env,
    )
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("date,asset,amount,proceeds,cost_basis,gain,holding_period")
    # 0.25 BTC sold for 11000 less the BNB fee worth 30; cost half of (0.5 BTC for 20000 + 20 fee).
    assert "BTC,0.25,10970,10010,960,short" in lines[2]
    assert lines[1].split(",")[1] == "BNB"  # the BNB fee was a disposal, with no known basis
    summary = (tmp_path / "gains.summary.csv").read_text().splitlines()
    assert summary[0] == "asset,short_proceeds,short_cost,short_gain,long_proceeds,long_cost,long_gain,total_gain"
    assert summary[-1].startswith("TOTAL,11000,10010,990,")  # 960 on BTC + 30 on the BNB fee
