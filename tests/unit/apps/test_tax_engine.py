"""The tax engine against its ``Decimal`` oracle (``kptest/tax_oracle.py``): same figures for
every method and scale; the ledger's storage of amounts and the upgrade of older ledgers; and the
report split over processes by asset against the one-process report, byte for byte."""

from __future__ import annotations

import csv
import decimal
import io
import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal as D
from pathlib import Path

import pytest
from ccxt.base.decimal_to_precision import ROUND, decimal_to_precision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyplane.apps.tax import ledgerfile, report, reporter
from keyplane.apps.tax.engine import Engine, TaxError, match_transfers, run
from keyplane.apps.tax.figures import STORED, to_decimal
from keyplane.apps.tax.ledger import Ledger, amount, store
from keyplane.apps.tax.ledgerfile import SCHEMA_VERSION
from keyplane.apps.tax.model import Trade, Transfer
from keyplane.apps.tax.pools import METHODS
from keyplane.apps.tax.prices import TransferRow, resolve
from kptest import tax_oracle, taxkit

T0 = 1_700_000_000_000


def money(places: int, low: str = "0.0001", high: str = "5000") -> st.SearchStrategy[D]:
    return st.decimals(min_value=D(low), max_value=D(high), places=places, allow_nan=False, allow_infinity=False)


@st.composite
def histories(draw: st.DrawFn, max_places: int = 10) -> tuple[list[Trade], list[Transfer]]:
    """Trades in BTC, ETH and BNB against USDT, some ETH/BTC, fees in any asset (with or without a
    known value), and deposits and withdrawals between two accounts, some of them matching."""
    places = st.integers(min_value=0, max_value=max_places)
    trades, transfers = [], []
    ts = T0
    for i in range(draw(st.integers(min_value=1, max_value=30))):
        ts += draw(st.integers(min_value=0, max_value=200 * 86_400_000))
        source = draw(st.sampled_from(["a", "b"]))
        if draw(st.integers(0, 9)) == 0:  # a deposit or a withdrawal
            asset = draw(st.sampled_from(["BTC", "ETH", "USDT"]))
            qty = draw(money(draw(places), high="20"))
            kind = draw(st.sampled_from(["deposit", "withdrawal"]))
            fee = draw(st.sampled_from([D(0), D("0.0005")])) if kind == "withdrawal" else D(0)
            txid = draw(st.sampled_from([None, "tx1", "tx2"]))
            transfers.append(Transfer(source, f"t{i}", kind, ts, asset, qty, fee, txid, None))
            continue
        base, quote = draw(st.sampled_from([("BTC", "USDT"), ("ETH", "USDT"), ("BNB", "USDT"), ("ETH", "BTC")]))
        qty = draw(money(draw(places), high="50"))
        cost = draw(money(draw(places), low="0", high="100000"))
        fee_asset = draw(st.sampled_from([None, base, quote, "BNB"]))
        fee = D(0) if fee_asset is None else draw(money(draw(places), high="1"))
        fee_value = draw(st.sampled_from([None, D("0.37")])) if fee_asset == "BNB" else None
        side = draw(st.sampled_from(["buy", "sell"]))
        trades.append(Trade(source, str(i), ts, base, quote, side, qty, cost, fee, fee_asset, fee_value))
    return trades, transfers


def _same(got: taxkit.Result, want: tax_oracle.Result) -> None:
    assert len(got.disposals) == len(want.disposals)
    for g, w in zip(got.disposals, want.disposals, strict=True):
        assert (g.ts, g.asset, g.term, g.kind, g.source, g.ref, g.held_days) == (
            w.ts, w.asset, w.term, w.kind, w.source, w.ref, w.held_days
        )  # fmt: skip
        assert (g.amount, g.proceeds, g.cost, g.gain) == (w.amount, w.proceeds, w.cost, w.gain)
        assert [(p.lot_id, p.acquired_ts, p.amount, p.cost) for p in g.lots] == [
            (p.lot_id, p.acquired_ts, p.amount, p.cost) for p in w.lots
        ]
    assert got.holdings == want.holdings
    assert got.own_transfers == want.own_transfers
    # Warnings name the same events; their amounts are written without trailing zeros.
    assert [x.split(":")[:3] for x in got.warnings] == [x.split(":")[:3] for x in want.warnings]


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_the_engine_gives_the_oracles_figures(method: str, history: tuple[list[Trade], list[Transfer]]) -> None:
    got = taxkit.compute(*history, method=method)
    assert got.scale == STORED
    _same(got, tax_oracle.compute(*history, method=method))


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(max_places=18))
def test_at_any_scale_up_to_18_decimals(method: str, history: tuple[list[Trade], list[Transfer]]) -> None:
    got = taxkit.compute(*history, method=method)
    _same(got, tax_oracle.compute(*history, method=method, places=got.scale))


def test_the_figures_do_not_depend_on_the_threads_decimal_context() -> None:
    # A lot of 7 BTC for 0.3; a withdrawal of 1 BTC to an own account takes 0.3 / 7 of its cost
    # (0.04285714285714..., rounded up), and a sale of 1 BTC then a sixth of the rest,
    # 0.04285714285: a tie, which rounds half to even. ccxt sets ROUND_HALF_UP on the thread's
    # context whenever it formats an amount; in the same process, a report must still round as
    # its own context says.
    trades = [
        Trade("a", "1", T0, "BTC", "USDT", "buy", D(7), D("0.3")),
        Trade("a", "2", T0 + 1, "BTC", "USDT", "sell", D(1), D(0)),
    ]
    transfers = [
        Transfer("a", "w", "withdrawal", T0, "BTC", D(1)),
        *(Transfer("a", f"d{i}", "deposit", T0 + 1, "BTC", D(1)) for i in range(2)),
    ]

    def figures() -> list[object]:
        want = tax_oracle.compute(trades, transfers)
        got = taxkit.compute(trades, transfers)
        return [[(d.cost, d.gain) for d in want.disposals], [(d.cost, d.gain) for d in got.disposals]]

    def as_ccxt_leaves_it() -> list[object]:
        decimal_to_precision("1.25", ROUND, 1)
        assert decimal.getcontext().rounding == decimal.ROUND_HALF_UP
        return figures()

    with ThreadPoolExecutor(1) as pool:  # a thread of its own: its context goes with it
        polluted = pool.submit(as_ccxt_leaves_it).result()
    clean = figures()
    assert polluted == clean
    assert clean[0] == [(D("0.0428571428"), D("-0.0428571428"))]  # 0.04285714285, half to even
    assert clean[1] == clean[0]


@settings(max_examples=300, deadline=None)
@given(
    value=st.decimals(allow_nan=False, allow_infinity=False, min_value=D("-1e30"), max_value=D("1e30"))
    | st.decimals(allow_nan=False, allow_infinity=False, places=18, min_value=0, max_value=100)
)
def test_every_amount_round_trips_exactly(value: D) -> None:
    stored = store(value)
    assert amount(stored) == value
    if isinstance(stored, int):
        assert -(2**63) <= stored < 2**63 and to_decimal(stored, STORED) == value


def test_amounts_are_integers_when_they_can_be(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        lg.add_trades(
            [
                Trade("a", "1", T0, "BTC", "USDT", "buy", D("0.50000000"), D("30000.12"), D("0.0005"), "BTC"),
                Trade("a", "2", T0, "ETH", "USDT", "buy", D("1.000000000000000001"), D("2000"), D(0), None),
                Trade("a", "3", T0, "SHIB", "USDT", "buy", D("9000000000000"), D("12.5"), D(0), None),
            ]
        )
        types = lg._db.execute("SELECT typeof(amount), typeof(cost), typeof(fee) FROM trades ORDER BY id").fetchall()
        assert types == [("integer",) * 3, ("text", "integer", "integer"), ("text", "integer", "integer")]
        assert [t.amount for t in lg.trades()] == [D("0.5"), D("1.000000000000000001"), D("9000000000000")]


def _v0_ledger(path: Path) -> None:
    """A ledger as the first format wrote it: amounts as text."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE trades (
            source TEXT NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, base TEXT NOT NULL, quote TEXT NOT NULL,
            side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), amount TEXT NOT NULL, cost TEXT NOT NULL,
            fee TEXT NOT NULL DEFAULT '0', fee_asset TEXT, fee_value TEXT, order_id TEXT,
            PRIMARY KEY (source, id)
        );
        CREATE INDEX trades_ts ON trades (ts);
        CREATE TABLE transfers (
            source TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('deposit', 'withdrawal')), id TEXT NOT NULL,
            ts INTEGER NOT NULL, asset TEXT NOT NULL, amount TEXT NOT NULL, fee TEXT NOT NULL DEFAULT '0',
            txid TEXT, address TEXT,
            PRIMARY KEY (source, kind, id)
        );
        CREATE TABLE cursors (
            source TEXT NOT NULL, stream TEXT NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (source, stream)
        );
        """
    )
    db.executemany(
        "INSERT INTO trades VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            ("a", "2", T0 + 5, "BTC", "USDT", "sell", "0.25", "15000.5", "0", None, None, None),
            ("a", "1", T0, "BTC", "USDT", "buy", "1.00000000", "40000", "0.001", "BTC", None, "o1"),
            ("a", "3", T0 + 5, "ETH", "USDT", "buy", "0.1234567890123", "300", "0.3", "BNB", "0.3", None),
        ],
    )
    db.execute("INSERT INTO transfers VALUES ('a','withdrawal','w1',?,'BTC','0.1','0.0005','tx',NULL)", (T0 + 9,))
    db.execute("INSERT INTO cursors VALUES ('a','trades:BTC/USDT',?)", (T0 + 5,))
    db.commit()
    db.close()


def test_a_ledger_of_the_first_format_is_upgraded_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    _v0_ledger(path)
    with Ledger(path) as lg:
        assert lg._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        trades = list(lg.trades())
        assert [(t.id, t.amount, t.cost, t.fee, t.fee_value, t.order_id) for t in trades] == [
            ("1", D(1), D(40000), D("0.001"), None, "o1"),
            ("2", D("0.25"), D("15000.5"), D(0), None, None),  # same ms as 3: the older row first
            ("3", D("0.1234567890123"), D(300), D("0.3"), D("0.3"), None),
        ]
        assert [(t.id, t.amount, t.fee) for t in lg.transfers()] == [("w1", D("0.1"), D("0.0005"))]
        # Reset: the old key may have dropped trades, so the next sync fetches them all again.
        assert lg.cursor("a", "trades:BTC/USDT") is None
        assert lg.add_trades(trades) == 0  # keyed by (account, market, id): a sync stays idempotent
    with Ledger(path) as lg:  # opening again changes nothing
        assert len(list(lg.trades())) == 3
    # The 13-decimal amount makes the report count in 13 decimals; the oracle agrees.
    done = reporter.make(path, tmp_path / "g.csv")
    with Ledger(path) as lg:
        assert lg.scale() == (13, True)
        want = tax_oracle.compute(lg.trades(), lg.transfers(), places=13)
    assert done.rows == len(want.disposals) == 2  # the sale, and the BNB fee (none held)
    assert _values(tmp_path / "g.csv") == _oracle_values(want.disposals, None)


def test_an_interrupted_upgrade_leaves_the_ledger_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.sqlite"
    _v0_ledger(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("DROP TABLE transfers")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ledgerfile, "_migrate_from_text", broken)
    with pytest.raises(TaxError, match=r"old.sqlite: cannot open the ledger \(disk I/O error\)"):
        Ledger(path)
    monkeypatch.undo()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM transfers").fetchone()[0] == 1
    assert db.execute("SELECT typeof(amount) FROM trades LIMIT 1").fetchone()[0] == "text"
    db.close()
    with Ledger(path) as lg:
        assert len(list(lg.trades())) == 3


@settings(max_examples=50, deadline=None)
@given(history=histories(), method=st.sampled_from(METHODS))
def test_lines_are_the_rows_the_csv_module_writes(history: tuple[list[Trade], list[Transfer]], method: str) -> None:
    trades, transfers = history
    evs = taxkit.events(trades, transfers, STORED)
    pairs = match_transfers(e for e in evs if isinstance(e, TransferRow))
    engine = Engine(method, "USDT", 365, STORED, resolve(evs, "USDT", set(pairs.values())))
    result = run(engine, evs, pairs)
    buf = io.StringIO()
    writer = csv.writer(buf)
    for d in result.disposals:
        writer.writerow(report.row(d, STORED))
    assert "".join(report.lines(result.disposals, STORED)) == buf.getvalue()


def _values(path: Path) -> list[list[object]]:
    """A gains CSV with its figures as Decimal values (the formats may differ in trailing zeros)."""
    out: list[list[object]] = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            lots = [(x.split("@")[0], *x.split("@")[1].split(":")) for x in r["matched_lots"].split("|")]
            out.append(
                [r["date"], r["asset"], *(D(r[k]) for k in ("amount", "proceeds", "cost_basis", "gain"))]
                + [r[k] for k in ("holding_period", "held_days", "kind", "account", "ref")]
                + [(i, day, D(a), D(c)) for i, day, a, c in lots]
            )
    return out


def _ledger_of(path: Path, trades: list[Trade], transfers: list[Transfer]) -> None:
    with Ledger(path) as lg:
        lg.add_trades(trades)
        lg.add_transfers(transfers)


def _one_and_split(tmp: Path, method: str = "fifo", year: int | None = None) -> tuple[reporter.Report, reporter.Report]:
    """The report of ``tmp / "l.sqlite"`` made in one process (``one.csv``) and split over several
    (``split.csv``), once the two files are found byte for byte the same."""
    one = reporter.make(tmp / "l.sqlite", tmp / "one.csv", method=method, year=year, parallel_events=10**9)
    split = reporter.make(tmp / "l.sqlite", tmp / "split.csv", method=method, year=year, parallel_events=1)
    assert (tmp / "one.csv").read_bytes() == (tmp / "split.csv").read_bytes()
    return one, split


def _oracle_values(disposals: list[tax_oracle.Disposal], year: int | None) -> list[list[object]]:
    """The oracle's disposals within ``year`` as ``_values`` reads a gains CSV."""
    return [
        [report.iso(d.ts), d.asset, d.amount, d.proceeds, d.cost, d.gain, d.term, str(d.held_days), d.kind, d.source,
         d.ref, *((p.lot_id, report.day(p.acquired_ts), p.amount, p.cost) for p in d.lots)]
        for d in disposals
        if year is None or report.day(d.ts).startswith(f"{year}-")
    ]  # fmt: skip


def _as_the_oracle_writes(tmp: Path, method: str, year: int | None, done: reporter.Report) -> None:
    """The oracle finds the same figures, totals and holdings as ``done`` (``split.csv``)."""
    with Ledger(tmp / "l.sqlite") as lg:
        scale = lg.scale()[0]
        want = tax_oracle.compute(lg.trades(), lg.transfers(), method=method, places=scale)
    assert _values(tmp / "split.csv") == _oracle_values(want.disposals, year)
    kept = [d for d in want.disposals if year is None or report.day(d.ts).startswith(f"{year}-")]
    assert done.summary[-1].total_gain == sum((d.gain for d in kept), D(0))
    assert done.holdings == {a: v for a, v in want.holdings.items() if v}


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(max_places=12), year=st.sampled_from([None, 2024]))
def test_two_processes_write_what_one_writes(
    tmp_path_factory: pytest.TempPathFactory, method: str, history: tuple[list[Trade], list[Transfer]], year: int | None
) -> None:
    tmp = tmp_path_factory.mktemp("r")
    _ledger_of(tmp / "l.sqlite", *history)
    one, split = _one_and_split(tmp, method, year)
    assert (tmp / "one.summary.csv").read_bytes() == (tmp / "split.summary.csv").read_bytes()
    assert (one.rows, one.warnings, one.holdings) == (split.rows, split.warnings, split.holdings)
    _as_the_oracle_writes(tmp, method, year, one)


def test_names_that_need_quoting_are_quoted_by_both_paths(tmp_path: Path) -> None:
    trades = [
        Trade('desk, "main"', "1", T0, "BTC", "USDT", "buy", D(1), D(100)),
        Trade('desk, "main"', "2", T0 + 1, "BTC", "USDT", "sell", D("0.5"), D(80)),
        Trade("b", "3", T0 + 2, "ETH", "USDT", "sell", D("0.5"), D(80)),
    ]
    _ledger_of(tmp_path / "l.sqlite", trades, [])
    _one_and_split(tmp_path)
    assert _values(tmp_path / "one.csv") == _oracle_values(tax_oracle.compute(trades).disposals, None)
    assert '"desk, ""main"""' in (tmp_path / "one.csv").read_text()


@st.composite
def usual_trades(draw: st.DrawFn) -> list[Trade]:
    """Only trades of BTC, ETH or SOL against USDT with the fee, if any, in their base or USDT (or
    a zero fee in BNB), some with nothing paid or a known fee value: no trade reads a price."""
    trades = []
    ts = T0
    for i in range(draw(st.integers(min_value=1, max_value=40))):
        ts += draw(st.integers(min_value=0, max_value=100 * 86_400_000))
        base = draw(st.sampled_from(["BTC", "ETH", "SOL"]))
        qty = draw(money(draw(st.integers(0, 10)), low="0", high="50"))
        cost = draw(money(2, low="0", high="100000"))
        fee_asset = draw(st.sampled_from([None, base, "USDT", "BNB"]))
        fee = D(0) if fee_asset in (None, "BNB") else draw(money(4, high="1"))
        fee_value = draw(st.sampled_from([None, None, D("0.37")])) if fee_asset is not None else None
        if fee and not (qty and cost) and fee_value is None:
            fee_value = D("0.1")  # a fee on nothing, of unknown value, would read its asset's price
        side = draw(st.sampled_from(["buy", "sell"]))
        source = draw(st.sampled_from(["a", "b"]))
        trades.append(Trade(source, str(i), ts, base, "USDT", side, qty, cost, fee, fee_asset, fee_value))
    return trades


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trades=usual_trades(), stored_in_order=st.booleans(), year=st.sampled_from([None, 2024]))
def test_trades_stored_out_of_time_order_are_reported_in_time_order(
    tmp_path_factory: pytest.TempPathFactory,
    method: str,
    trades: list[Trade],
    stored_in_order: bool,
    year: int | None,
) -> None:
    tmp = tmp_path_factory.mktemp("u")
    # Stored out of time order (as a sync of several accounts may store them), the ledger's order
    # is still by time, then by the order of storing.
    _ledger_of(tmp / "l.sqlite", trades if stored_in_order else trades[::-1], [])
    with Ledger(tmp / "l.sqlite") as lg:
        groups = reporter._groups(lg, "USDT", 1)
    assert (groups is not None) == (len({t.base for t in trades}) > 1)
    one, split = _one_and_split(tmp, method, year)
    assert (tmp / "one.summary.csv").read_bytes() == (tmp / "split.summary.csv").read_bytes()
    assert (one.rows, one.warnings, one.holdings) == (split.rows, split.warnings, split.holdings)
    _as_the_oracle_writes(tmp, method, year, split)


def test_more_assets_than_processes_are_grouped_by_their_number_of_trades(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trades = [
        Trade("a", f"{a}{i}", T0 + i, a, "USDT", "buy", D(1), D(10))
        for a, n in (("BTC", 5), ("ETH", 3), ("SOL", 2), ("ADA", 1))
        for i in range(n)
    ]
    _ledger_of(tmp_path / "l.sqlite", trades, [])
    monkeypatch.setattr(reporter, "WORKERS", 2)
    with Ledger(tmp_path / "l.sqlite") as lg:
        groups = reporter._groups(lg, "USDT", 1)
        assert groups is not None
        assert sorted(map(sorted, groups)) == [["ADA", "BTC"], ["ETH", "SOL"]]  # 6 and 5 trades
        assert reporter._groups(lg, "USDT", len(trades) + 1) is None  # too small to split
        assert lg.assets("USDT", weighed=True) == {"BTC": 5, "ETH": 3, "SOL": 2, "ADA": 1}
    one, split = _one_and_split(tmp_path)
    assert one.holdings == split.holdings == {"BTC": D(5), "ETH": D(3), "SOL": D(2), "ADA": D(1)}


def test_names_that_need_quoting_are_written_alike_by_the_processes_of_each_asset(tmp_path: Path) -> None:
    # Commas, quotes, a line break and letters beyond ASCII (several bytes each in UTF-8): the
    # processes place their lines by their length in bytes.
    sources = ['Kraken, "main"', "Börse", "plain", "line\nbreak"]
    trades = [
        Trade(sources[i % 4], f"id-{i}-é", T0 + i * 3_600_000, base, "USDT", side, D(1), D(100 + i))
        for i, (base, side) in enumerate(
            [("BTC", "buy"), ("ETH", "buy"), ("BTC", "sell"), ("SOL", "buy"), ("ETH", "sell"), ("SOL", "sell")] * 5
        )
    ]
    _ledger_of(tmp_path / "l.sqlite", trades, [])
    one, split = _one_and_split(tmp_path)
    assert one.rows == split.rows == 15
    rows = list(csv.DictReader(io.StringIO((tmp_path / "split.csv").read_text(), newline="")))
    assert len(rows) == 15
    assert {r["account"] for r in rows} == set(sources)
    assert rows[0]["ref"] == "plain:trade:id-2-é"
    assert rows[0]["matched_lots"].startswith('Kraken, "main":trade:id-0-é@')


def test_a_report_that_fails_in_a_process_leaves_the_previous_file_and_stops_every_process(tmp_path: Path) -> None:
    trades = [Trade("a", str(i), T0 + i, ("BTC", "ETH")[i % 2], "USDT", "buy", D(1), D(10)) for i in range(20)]
    _ledger_of(tmp_path / "l.sqlite", trades, [])
    out = tmp_path / "gains.csv"
    out.write_text("the previous report\n")
    # Year 0 cannot be a datetime: each process fails while picking its disposals of the year.
    with pytest.raises(ValueError, match="year 0 is out of range"):
        reporter.make(tmp_path / "l.sqlite", out, parallel_events=1, year=0)
    assert out.read_text() == "the previous report\n"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("l.sqlite")] == ["gains.csv"]  # no temp file
    assert not multiprocessing.active_children()


@pytest.mark.parametrize(
    ("extra", "reads_a_price"),
    [
        (Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D("0.01"), "BNB"), True),  # a third-asset fee
        (Trade("a", "x", T0, "ETH", "BTC", "buy", D(1), D("0.05")), True),  # crypto to crypto
        (Trade("a", "x", T0, "USDT", "ETH", "buy", D(10), D(1)), False),  # the report currency as the base
        (Trade("a", "x", T0, "ETH", "USDT", "buy", D(0), D(0), D("0.01"), "ETH"), True),  # a fee on nothing
        (Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D("0.01"), "BNB", D("0.5")), False),  # BNB's pool
        (Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(0)), False),  # nothing paid
        (Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D(0), "BNB"), False),  # no fee, in a third asset
        (Transfer("a", "x", "deposit", T0, "ETH", D(1)), True),
        (Transfer("a", "x", "withdrawal", T0 + 2, "BTC", D("0.25")), False),
    ],
)
def test_events_that_need_a_price_or_another_pool(
    tmp_path: Path, extra: Trade | Transfer, reads_a_price: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        lg.add_trades([Trade("a", "1", T0, "BTC", "USDT", "buy", D(1), D(100), D("0.1"), "USDT")])
        if isinstance(extra, Trade):
            lg.add_trades([extra, Trade("a", "2", T0 + 1, "BTC", "USDT", "sell", D("0.5"), D(60))])
        else:
            lg.add_transfers([extra])
    passes = []
    first_pass = reporter._resolve
    monkeypatch.setattr(reporter, "_resolve", lambda *a: passes.append(1) or first_pass(*a))
    one, split = _one_and_split(tmp_path)
    assert (tmp_path / "one.summary.csv").read_bytes() == (tmp_path / "split.summary.csv").read_bytes()
    assert (one.rows, one.warnings, one.holdings) == (split.rows, split.warnings, split.holdings) != (0, [], {})
    assert not list(tmp_path.glob(".*.tmp"))
    # The first pass runs only for what reads a price: once in each report, or not at all.
    assert len(passes) == (2 if reads_a_price else 0)
    with Ledger(tmp_path / "l.sqlite") as lg:  # found from the indexes, but for a fee paid on nothing
        assert lg.reads_prices("USDT") == (reads_a_price and isinstance(extra, Trade) and bool(extra.amount))
    _as_the_oracle_writes(tmp_path, "fifo", None, split)


def test_an_amount_of_18_decimals_is_counted_and_one_of_19_is_refused_by_name(tmp_path: Path) -> None:
    trades = [
        Trade("a", "1", T0, "ETH", "USDT", "buy", D("1.000000000000000001"), D(2000)),
        Trade("a", "2", T0 + 1, "BTC", "USDT", "buy", D(1), D("30000.5")),
        Trade("a", "3", T0 + 2, "ETH", "USDT", "sell", D("0.5"), D(1100)),
    ]
    _ledger_of(tmp_path / "l.sqlite", trades, [])
    one, split = _one_and_split(tmp_path)
    assert one.holdings == {"BTC": D(1), "ETH": D("0.500000000000000001")}
    _as_the_oracle_writes(tmp_path, "fifo", None, split)
    with Ledger(tmp_path / "l.sqlite") as lg:
        lg.add_trades([Trade("a", "4", T0 + 3, "ETH", "USDT", "buy", D("1e-19"), D(1))])
    with pytest.raises(TaxError, match=r"^a:trade:4: the amount 1E-19 has more than 18 decimals"):
        reporter.make(tmp_path / "l.sqlite", tmp_path / "g.csv")


def test_an_empty_ledger_gives_an_empty_report(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.sqlite").close()
    done = reporter.make(tmp_path / "l.sqlite", tmp_path / "g.csv")
    assert done.rows == 0 and done.holdings == {} and done.summary[-1].asset == "TOTAL"
    assert (tmp_path / "g.csv").read_bytes() == report.header().encode()


def test_a_ledger_of_a_newer_format_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(TaxError, match="newer than this keyplane"):
        Ledger(path)


def test_a_ledger_of_format_2_gains_the_index_of_third_asset_fees_and_keeps_its_cursors(tmp_path: Path) -> None:
    path = tmp_path / "l.sqlite"
    with Ledger(path) as lg:
        lg.add_trades([Trade("a", "1", T0, "ETH", "USDT", "buy", D(1), D(10), D("0.01"), "BNB")])
        lg.set_cursor("a", "trades:ETH/USDT", T0)
    db = sqlite3.connect(path)
    db.execute("DROP INDEX trades_third_fee")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    with Ledger(path) as lg:
        assert lg._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert lg.cursor("a", "trades:ETH/USDT") == T0  # trades were keyed right in format 2
        assert lg.assets("USDT", weighed=True) == {"ETH": 1, "BNB": 1}
