"""The scaled-integer report against the ``Decimal`` engine: same figures for every method, the
ledger's storage of amounts, the upgrade of ledgers of the first format, and the two-process
report against the one-process one."""

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

from keyplane.apps.tax import report, reporter, scaled
from keyplane.apps.tax.engine import TaxError, compute
from keyplane.apps.tax.ledger import SCHEMA_VERSION, Ledger, amount, store
from keyplane.apps.tax.model import Trade, Transfer
from keyplane.apps.tax.pools import METHODS

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


def rows(trades: list[Trade], transfers: list[Transfer]) -> tuple[list[scaled.Row], list[scaled.TransferRow]]:
    def s(d: D | None) -> int | None:
        return None if d is None else store(d)  # type: ignore[return-value]

    r = [
        scaled.Row(
            t.source, f"{t.source}:trade:{t.id}", *t[2:6], s(t.amount), s(t.cost), s(t.fee), t.fee_asset, s(t.fee_value)
        )
        for t in trades
    ]  # type: ignore[arg-type]
    x = [scaled.TransferRow(*t[:5], s(t.amount), s(t.fee), t.txid, t.address) for t in transfers]  # type: ignore[arg-type]
    return r, x


def dec(n: int) -> D:
    return scaled.to_decimal(n)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_scaled_engine_gives_the_decimal_engines_figures(
    method: str, history: tuple[list[Trade], list[Transfer]]
) -> None:
    trades, transfers = history
    want = compute(trades, transfers, method=method)
    got = scaled.compute(*rows(trades, transfers), method=method)
    assert len(got.disposals) == len(want.disposals)
    for g, w in zip(got.disposals, want.disposals, strict=True):
        assert (g.ts, g.asset, g.term, g.kind, g.source, g.ref, g.held_days) == (
            w.ts, w.asset, w.term, w.kind, w.source, w.ref, w.held_days
        )  # fmt: skip
        assert [dec(v) for v in (g.amount, g.proceeds, g.cost, g.gain)] == [w.amount, w.proceeds, w.cost, w.gain]  # type: ignore[arg-type]
        assert [(p.lot_id, p.acquired_ts, dec(p.amount), dec(p.cost)) for p in g.lots] == [  # type: ignore[arg-type]
            (p.lot_id, p.acquired_ts, p.amount, p.cost) for p in w.lots
        ]
    assert {a: dec(v) for a, v in got.holdings.items()} == want.holdings  # type: ignore[arg-type]
    # Warnings name the same events; their amounts are written without trailing zeros.
    assert [x.split(":")[:3] for x in got.warnings] == [x.split(":")[:3] for x in want.warnings]


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
        want = compute(trades, transfers)
        got = scaled.compute(*rows(trades, transfers))
        summary = report.summarise(want.disposals)
        return [
            [(d.cost, d.gain) for d in want.disposals],
            [(dec(d.cost), dec(d.gain)) for d in got.disposals],  # type: ignore[arg-type]
            [s.total_gain for s in summary],
        ]

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
        assert -(2**63) <= stored < 2**63 and scaled.to_decimal(stored) == value


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
    # The 13-decimal amount sends this ledger to the Decimal engine; the report is the same.
    done = reporter.make(path, tmp_path / "g.csv")
    with Ledger(path) as lg:
        want = compute(lg.trades(), lg.transfers())
    assert done.rows == len(want.disposals) == 2  # the sale, and the BNB fee (none held)


def test_an_interrupted_upgrade_leaves_the_ledger_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.sqlite"
    _v0_ledger(path)

    def broken(self: Ledger) -> None:
        self._db.execute("DROP TABLE transfers")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Ledger, "_migrate_from_text", broken)
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
def test_scaled_lines_are_the_rows_the_csv_module_writes(
    history: tuple[list[Trade], list[Transfer]], method: str
) -> None:
    result = scaled.compute(*rows(*history), method=method)
    buf = io.StringIO()
    writer = csv.writer(buf)
    for d in result.disposals:
        writer.writerow(report.row_scaled(d))
    assert "".join(report.scaled_lines(result.disposals)) == buf.getvalue()


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


def _as_the_decimal_engine_writes(tmp: Path, method: str, year: int | None, done: reporter.Report) -> None:
    """The ``Decimal`` engine writes the same figures, summary and holdings as ``done`` (``split.csv``)."""
    with Ledger(tmp / "l.sqlite") as lg:
        want = compute(lg.trades(), lg.transfers(), method=method)
    report.write(tmp / "dec.csv", report.in_year(want.disposals, year))
    assert _values(tmp / "split.csv") == _values(tmp / "dec.csv")
    assert (tmp / "split.summary.csv").read_bytes() == (tmp / "dec.summary.csv").read_bytes()
    assert done.holdings == want.holdings


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
    _as_the_decimal_engine_writes(tmp, method, year, one)


def test_names_that_need_quoting_are_quoted_by_both_paths(tmp_path: Path) -> None:
    trades = [
        Trade('desk, "main"', "1", T0, "BTC", "USDT", "buy", D(1), D(100)),
        Trade('desk, "main"', "2", T0 + 1, "BTC", "USDT", "sell", D("0.5"), D(80)),
        Trade("b", "3", T0 + 2, "ETH", "USDT", "sell", D("0.5"), D(80)),
    ]
    _ledger_of(tmp_path / "l.sqlite", trades, [])
    _one_and_split(tmp_path)
    report.write(tmp_path / "dec.csv", compute(trades).disposals)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "dec.csv").read_bytes()
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
def test_with_only_usual_trades_each_process_reads_and_walks_its_own_assets(
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
        assert lg.only_usual_trades("USDT")
        plan = reporter._own_plan(lg, 1)
        assert (plan is not None) == (len({t.base for t in trades}) > 1)
    one, split = _one_and_split(tmp, method, year)
    assert (tmp / "one.summary.csv").read_bytes() == (tmp / "split.summary.csv").read_bytes()
    assert (one.rows, one.warnings, one.holdings) == (split.rows, split.warnings, split.holdings)
    _as_the_decimal_engine_writes(tmp, method, year, split)


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
        plan = reporter._own_plan(lg, 1)
        assert plan is not None
        assert sorted(plan.groups) == [("BTC", "ADA"), ("ETH", "SOL")]  # 6 and 5 trades
        assert reporter._own_plan(lg, len(trades) + 1) is None  # too small to split
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
    with Ledger(tmp_path / "l.sqlite") as lg:
        assert reporter._own_plan(lg, 1) is not None
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
    "extra",
    [
        Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D("0.01"), "BNB"),  # a third-asset fee
        Trade("a", "x", T0, "ETH", "BTC", "buy", D(1), D("0.05")),  # crypto to crypto
        Trade("a", "x", T0, "USDT", "ETH", "buy", D(10), D(1)),  # the report currency as the base
        Trade("a", "x", T0, "ETH", "USDT", "buy", D(0), D(0), D("0.01"), "ETH"),  # a fee on nothing
        Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D("0.01"), "BNB", D("0.5")),  # BNB's pool
        Transfer("a", "x", "deposit", T0, "ETH", D(1)),
    ],
)
def test_anything_that_reads_a_price_is_not_usual(tmp_path: Path, extra: Trade | Transfer) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        lg.add_trades([Trade("a", "1", T0, "BTC", "USDT", "buy", D(1), D(100), D("0.1"), "USDT")])
        assert lg.only_usual_trades("USDT")
        if isinstance(extra, Trade):
            lg.add_trades([extra, Trade("a", "2", T0 + 1, "BTC", "USDT", "sell", D("0.5"), D(60))])
        else:
            lg.add_transfers([extra])
        assert not lg.only_usual_trades("USDT")
        plan = reporter._own_plan(lg, 1)
        if isinstance(extra, Trade):  # the process that reads the trade finds it, and says so
            assert plan is not None
            first, step = plan.first, plan.step
            fee_in = {a: [r[8] for r in lg.own_trades(a, "USDT", first, step)] for g in plan.groups for a in g}
            assert fee_in[extra.base] == [-1]
            assert all(x >= 0 for a, xs in fee_in.items() if a != extra.base for x in xs)
        else:
            assert plan is None
    # Then the whole ledger is read in one piece, as for a small ledger.
    one, split = _one_and_split(tmp_path)
    assert (tmp_path / "one.summary.csv").read_bytes() == (tmp_path / "split.summary.csv").read_bytes()
    assert (one.rows, one.warnings, one.holdings) == (split.rows, split.warnings, split.holdings) != (0, [], {})
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize(
    "extra",
    [
        Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(0)),  # nothing paid
        Trade("a", "x", T0, "ETH", "USDT", "sell", D(0), D(5)),  # nothing sold
        Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D("0.01"), "ETH", D("0.5")),  # a fee value
        Trade("a", "x", T0, "ETH", "USDT", "buy", D(1), D(10), D(0), "BNB"),  # no fee, in a third asset
    ],
)
def test_trades_that_read_no_price_are_usual(tmp_path: Path, extra: Trade) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        lg.add_trades([Trade("a", "1", T0, "BTC", "USDT", "buy", D(1), D(100), D("0.1"), "USDT"), extra])
        assert lg.only_usual_trades("USDT")
        plan = reporter._own_plan(lg, 1)
        assert plan is not None
        assert all(r[8] >= 0 for g in plan.groups for a in g for r in lg.own_trades(a, "USDT", plan.first, plan.step))


def test_a_ledger_with_an_amount_in_decimal_text_is_not_split_by_asset(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as lg:
        lg.add_trades(
            [
                Trade("a", "1", T0, "BTC", "USDT", "buy", D(1), D(100)),
                Trade("a", "2", T0, "ETH", "USDT", "buy", D("1.000000000001"), D(100)),
            ]
        )
        assert lg.only_usual_trades("USDT")
        assert not lg.all_integers()
        assert reporter._own_plan(lg, 1) is None


def test_a_ledger_of_a_newer_format_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(TaxError, match="newer than this keyplane"):
        Ledger(path)
