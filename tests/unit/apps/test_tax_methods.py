"""Hand-computed cost-basis cases for every method, fees in base, quote and a third asset, partial
fills, transfers between own accounts and a year boundary."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from keyplane.apps.tax.engine import TaxError
from keyplane.apps.tax.model import Trade, Transfer
from keyplane.apps.tax.report import in_year
from kptest.taxkit import compute


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def buy(
    i: str,
    when: str,
    amount: str,
    cost: str,
    fee: str = "0",
    fee_asset: str | None = None,
    base: str = "BTC",
    source: str = "a",
) -> Trade:
    return Trade(source, i, ms(when), base, "USDT", "buy", D(amount), D(cost), D(fee), fee_asset)


def sell(
    i: str,
    when: str,
    amount: str,
    cost: str,
    fee: str = "0",
    fee_asset: str | None = None,
    base: str = "BTC",
    source: str = "a",
) -> Trade:
    return Trade(source, i, ms(when), base, "USDT", "sell", D(amount), D(cost), D(fee), fee_asset)


# Lot 1: 1 BTC for 10000 + 10 USDT fee (fee in quote: added to cost) -> cost 10010, long-term by the sale.
# Lot 2: 1 BTC for 20000 with a 0.001 BTC fee (fee in base: fewer units) -> 0.999 BTC for 20000.
# Lot 3: 1 BTC for 5000, no fee.
# Sale: 1.5 BTC for 45000 with a 45 USDT fee (deducted from proceeds) -> proceeds 44955.
LOTS = [
    buy("1", "2025-01-10", "1", "10000", "10", "USDT"),
    buy("2", "2025-06-01", "1", "20000", "0.001", "BTC"),
    buy("3", "2025-09-01", "1", "5000"),
    sell("4", "2026-03-01", "1.5", "45000", "45", "USDT"),
]

EXPECTED = {
    # method: [(term, amount, proceeds, cost, gain, lots)]
    "fifo": [
        ("short", "0.5", "14985", "10010.01001001", "4974.98998999", ["a:trade:2"]),
        ("long", "1", "29970", "10010", "19960", ["a:trade:1"]),
    ],
    "lifo": [("short", "1.5", "44955", "15010.01001001", "29944.98998999", ["a:trade:3", "a:trade:2"])],
    "hifo": [
        # lot 2 costs 20000/0.999 = 20020.02 per BTC, the highest; then lot 1 (10010).
        ("short", "0.999", "29940.03", "20000", "9940.03", ["a:trade:2"]),
        ("long", "0.501", "15014.97", "5015.01", "9999.96", ["a:trade:1"]),
    ],
    "average": [
        # 35010 USDT for 2.999 BTC; 1.5 BTC cost 35010 * 1.5 / 2.999 = 17510.8369456485 (to 1e-10),
        # split over the oldest units for dating: lot 1 (1 BTC) and lot 2 (0.5 BTC).
        ("short", "0.5", "14985", "5836.9456485495", "9148.0543514505", ["a:trade:2"]),
        ("long", "1", "29970", "11673.891297099", "18296.108702901", ["a:trade:1"]),
    ],
}


@pytest.mark.parametrize("method", list(EXPECTED))
def test_hand_computed_cases(method: str) -> None:
    result = compute(LOTS, method=method)
    got = [(d.term, d.amount, d.proceeds, d.cost, d.gain, [p.lot_id for p in d.lots]) for d in result.disposals]
    want = [(t, D(a), D(p), D(c), D(g), lots) for t, a, p, c, g, lots in EXPECTED[method]]
    assert got == want
    assert sum(d.proceeds for d in result.disposals) == D("44955")
    assert result.holdings == {"BTC": D("1.499")}


def test_unknown_method_is_refused() -> None:
    with pytest.raises(TaxError, match="unknown tax method 'magic'"):
        compute(LOTS, method="magic")


def test_third_asset_fee_is_a_disposal_of_that_asset() -> None:
    trades = [
        buy("1", "2026-01-01", "10", "3000", base="BNB"),  # BNB at 300
        Trade("a", "2", ms("2026-01-02"), "ETH", "USDT", "buy", D(1), D(2000), D("0.1"), "BNB"),  # fee worth 30
        buy("3", "2026-01-03", "1", "400", base="BNB"),  # BNB now 400
        Trade("a", "4", ms("2026-01-04"), "ETH", "USDT", "sell", D(1), D(2500), D("0.1"), "BNB"),  # fee worth 40
    ]
    result = compute(trades, method="fifo")
    rows = [(d.kind, d.asset, d.amount, d.proceeds, d.cost, d.gain) for d in result.disposals]
    assert rows == [
        ("fee", "BNB", D("0.1"), D(30), D(30), D(0)),  # buy fee: 0.1 BNB bought at 300, worth 30
        ("fee", "BNB", D("0.1"), D(40), D(30), D(10)),  # sell fee: worth 40 now, cost 30 (FIFO)
        ("trade", "ETH", D(1), D(2460), D(2030), D(430)),  # 2500 - 40 fee; cost 2000 + 30 fee
    ]


def test_fee_value_from_the_source_wins_over_the_ledger_price() -> None:
    trades = [
        buy("1", "2026-01-01", "10", "3000", base="BNB"),
        Trade("a", "2", ms("2026-01-02"), "ETH", "USDT", "buy", D(1), D(2000), D("0.1"), "BNB", D("31.5")),
    ]
    (fee,) = compute(trades).disposals
    assert (fee.proceeds, fee.cost, fee.gain) == (D("31.5"), D(30), D("1.5"))


def test_sell_fee_in_base_is_sold_with_it() -> None:
    trades = [buy("1", "2026-01-01", "2", "100"), sell("2", "2026-02-01", "1", "80", "0.01", "BTC")]
    (d,) = compute(trades).disposals
    assert (d.amount, d.proceeds, d.cost, d.gain) == (D("1.01"), D(80), D("50.5"), D("29.5"))


def test_crypto_to_crypto_trade_uses_ledger_prices() -> None:
    trades = [
        buy("1", "2026-01-01", "1", "30000"),  # BTC at 30000
        buy("2", "2026-01-02", "1", "40000"),  # BTC at 40000 now
        Trade("a", "3", ms("2026-01-03"), "ETH", "BTC", "buy", D(10), D("0.5"), D("0.01"), "ETH"),
    ]
    (d,) = compute(trades).disposals
    # 0.5 BTC given, worth 0.5 * 40000 = 20000; FIFO cost 0.5 * 30000 = 15000.
    assert (d.asset, d.amount, d.proceeds, d.cost, d.gain) == ("BTC", D("0.5"), D(20000), D(15000), D(5000))
    assert compute(trades).holdings["ETH"] == D("9.99")  # fee in the bought asset: fewer units


def test_partial_fills_of_one_order_are_lots_of_their_own() -> None:
    trades = [
        Trade("a", "f1", ms("2026-01-01T10:00:00"), "BTC", "USDT", "buy", D("0.2"), D("20"), order_id="o1"),
        Trade("a", "f2", ms("2026-01-01T10:00:00"), "BTC", "USDT", "buy", D("0.3"), D("30.3"), order_id="o1"),
        Trade("a", "f3", ms("2026-01-01T10:00:01"), "BTC", "USDT", "buy", D("0.5"), D("51"), order_id="o1"),
        Trade("a", "s1", ms("2026-02-01"), "BTC", "USDT", "sell", D("0.4"), D("44"), order_id="o2"),
        Trade("a", "s2", ms("2026-02-01"), "BTC", "USDT", "sell", D("0.6"), D("66"), order_id="o2"),
    ]
    first, second = compute(trades, method="fifo").disposals
    assert [(p.lot_id, p.amount, p.cost) for p in first.lots] == [
        ("a:trade:f1", D("0.2"), D(20)),
        ("a:trade:f2", D("0.2"), D("20.2")),
    ]
    assert (first.proceeds, first.cost, first.gain) == (D(44), D("40.2"), D("3.8"))
    assert [(p.lot_id, p.amount, p.cost) for p in second.lots] == [
        ("a:trade:f2", D("0.1"), D("10.1")),
        ("a:trade:f3", D("0.5"), D(51)),
    ]
    assert (second.proceeds, second.cost, second.gain) == (D(66), D("61.1"), D("4.9"))


def test_transfer_between_own_accounts_is_not_a_disposal() -> None:
    trades = [
        buy("1", "2026-01-01", "1", "30000", source="binance"),
        sell("2", "2026-03-01", "0.9", "36000", source="keyplane"),
    ]
    transfers = [
        Transfer("binance", "w1", "withdrawal", ms("2026-02-01T10:00:00"), "BTC", D("1"), D("0.0005"), "tx1"),
        Transfer("keyplane", "d1", "deposit", ms("2026-02-01T10:20:00"), "BTC", D("0.9995"), D(0), "tx1"),
    ]
    result = compute(trades, transfers, method="fifo")
    assert result.own_transfers == 1
    kinds = [(d.kind, d.amount, d.proceeds, d.cost) for d in result.disposals]
    # Only the network fee leaves (for no proceeds); the sale uses the original lot's basis.
    assert kinds == [("transfer-fee", D("0.0005"), D(0), D(15)), ("trade", D("0.9"), D(36000), D(27000))]
    assert result.holdings == {"BTC": D("0.0995")}


def test_unmatched_withdrawal_and_deposit_keep_the_basis() -> None:
    trades = [buy("1", "2026-01-01", "1", "30000"), sell("2", "2026-03-01", "1", "50000")]
    transfers = [
        Transfer("a", "w1", "withdrawal", ms("2026-01-15"), "BTC", D(1)),  # to the user's own cold wallet
        Transfer("a", "d1", "deposit", ms("2026-02-15"), "BTC", D(1)),  # back, a month later
    ]
    (d,) = compute(trades, transfers).disposals
    assert (d.cost, d.gain, d.lots[0].lot_id) == (D(30000), D(20000), "a:trade:1")


def test_year_boundary() -> None:
    trades = [buy("1", "2025-12-31T23:59:59", "1", "100"), sell("2", "2026-01-01T00:00:01", "1", "120")]
    result = compute(trades)
    assert in_year(result.disposals, 2025) == []
    (d,) = in_year(result.disposals, 2026)
    assert (d.term, d.held_days, d.gain) == ("short", 0, D(20))


def test_long_term_starts_after_the_holding_period() -> None:
    trades = [
        buy("1", "2024-01-01", "2", "100"),
        sell("2", "2024-12-31", "1", "80"),
        sell("3", "2025-01-02", "1", "90"),
    ]
    terms = [(d.term, d.held_days) for d in compute(trades).disposals]
    assert terms == [("short", 365), ("long", 367)]


def test_selling_more_than_held_is_counted_at_zero_cost_with_a_warning() -> None:
    result = compute([sell("1", "2026-01-01", "1", "100")])
    (d,) = result.disposals
    assert (d.cost, d.gain) == (D(0), D(100))
    assert "more than the ledger holds" in result.warnings[0]


def test_report_csv_quotes_names_that_need_it(tmp_path) -> None:
    import csv

    from keyplane.apps.tax import report, reporter
    from keyplane.apps.tax.ledger import Ledger

    trades = [
        buy("1", "2025-01-10", "1", "10000", source='desk, "OTC"'),
        buy("2", "2025-06-01", "1", "20000", source="a"),
        sell("3", "2026-03-01", "1.5", "45000", "45", "USDT", source="a"),
    ]
    with Ledger(tmp_path / "ledger.sqlite") as lg:
        lg.add_trades(trades)
    out = tmp_path / "gains.csv"
    done = reporter.make(tmp_path / "ledger.sqlite", out)
    with out.open(newline="") as f:
        parsed = list(csv.reader(f))
    assert parsed[0] == report.COLUMNS
    assert len(parsed) == 1 + done.rows == 3
    # One sale, held long and short: the short part (half of lot 2) first, then lot 1.
    assert [r[-1] for r in parsed[1:]] == ["a:trade:2@2025-06-01:0.5:10000", 'desk, "OTC":trade:1@2025-01-10:1:10000']
    assert [r[9] for r in parsed[1:]] == ["a", "a"]
