"""The Binance endpoints clients call at start-up and for fees and addresses, over real HTTP on a
real database: the coin list (``capital/config/getall``), asset details, deposit addresses, trading
fees and commission rates, the system status, and the empty answers about margin and futures.
Each answer has Binance's shape and the caller's own data; bad input gets a precise Binance error."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from keyplane.accounts.stepup import StepUp
from keyplane.exchange.wallet import deposit_address
from kptest.exchange import ExchangeServer, exchange_server, signed_request
from kptest.server import start_in_thread


@pytest.fixture(scope="module")
def xs(make_settings) -> Iterator[ExchangeServer]:
    # Withdrawals stay pending for the module's length, so ``withdrawing`` can be read back.
    suffix = "S" + "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(2))
    with exchange_server(make_settings(withdraw_step_s=3600), suffix) as srv:
        yield srv


@dataclasses.dataclass
class Caller:
    user_id: int
    api_key: str
    secret: str
    url: str

    def get(self, path: str, **params: Any) -> httpx.Response:
        return signed_request("GET", self.url, path, self.api_key, self.secret, params)

    def ok(self, path: str, **params: Any) -> Any:
        r = self.get(path, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert not (isinstance(body, dict) and "code" in body), body  # ccxt reads a "code" as an error
        return body


def _caller(xs: ExchangeServer, scopes: tuple[str, ...] = ("read",), credit: dict[str, str] | None = None,
            **restrictions: Any) -> Caller:  # fmt: skip
    svc = xs.services
    user = svc.accounts.create_user(f"s{secrets.token_hex(6)}@example.com", "correct horse battery staple")
    for asset, amount in (credit or {}).items():
        svc.exchange.wallet.credit(user.id, xs.a(asset), amount)
    issued = svc.keys.create(
        user.id,
        scopes=scopes,
        restrictions=svc.keys.build_restrictions(**restrictions),
        key_type="hmac",
        step_up=StepUp.operator(),
    )
    return Caller(user.id, issued.info.api_key, issued.secret, xs.url)


def _refused(r: httpx.Response, code: int, *fragments: str) -> dict[str, Any]:
    assert r.status_code in (400, 401, 403), r.text
    body = r.json()
    assert body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["msg"], body["msg"]
    return body


# -- capital/config/getall ---------------------------------------------------------------------


def test_getall_lists_every_coin_with_its_network_and_the_callers_balances(xs):
    alice = _caller(xs, credit={"USDT": "1500.25", "BTC": "0.5"})
    coins = alice.ok("/sapi/v1/capital/config/getall")
    assert [c["coin"] for c in coins] == list(xs.services.exchange.assets)
    by_coin = {c["coin"]: c for c in coins}
    usdt = by_coin[xs.a("USDT")]
    assert (usdt["free"], usdt["locked"], usdt["withdrawing"]) == ("1500.25", "0", "0")
    assert usdt["trading"] is True and usdt["isLegalMoney"] is False
    assert usdt["depositAllEnable"] is True and usdt["withdrawAllEnable"] is True
    assert by_coin[xs.a("ETH")]["free"] == "0" and by_coin[xs.a("BTC")]["free"] == "0.5"
    [net] = usdt["networkList"]
    assert net == {
        "network": "ETH", "coin": xs.a("USDT"), "name": "ETH", "isDefault": True, "depositEnable": True,
        "withdrawEnable": True, "depositDesc": "", "withdrawDesc": "", "specialTips": "", "specialWithdrawTips": "",
        "resetAddressStatus": False, "addressRegex": "^(?:0x[0-9a-fA-F]{40})$", "addressRule": "", "memoRegex": "",
        "withdrawFee": "1", "withdrawMin": "10", "withdrawMax": "92233720367.54775807",
        "withdrawIntegerMultiple": "0.00000001", "withdrawInternalMin": "0.00000001", "depositDust": "0.00000001",
        "minConfirm": 1, "unLockConfirm": 0, "sameAddress": False, "withdrawTag": False, "estimatedArrivalTime": 1,
        "busy": False,
    }  # fmt: skip
    btc = by_coin[xs.a("BTC")]["networkList"][0]
    assert (btc["network"], btc["withdrawFee"], btc["withdrawMin"]) == ("BTC", "0.0002", "0.001")


def test_getall_shows_open_orders_as_locked_and_pending_withdrawals(xs):
    alice = _caller(xs, scopes=("read", "trade", "withdraw"), credit={"USDT": "1000"}, ips=["127.0.0.1/32", "::1"])
    placed = signed_request(
        "POST", xs.url, "/api/v3/order", alice.api_key, alice.secret,
        {"symbol": xs.a("BTC") + xs.a("USDT"), "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
         "quantity": "0.01", "price": "10000"},
    )  # fmt: skip
    assert placed.status_code == 200, placed.text
    applied = signed_request(
        "POST", xs.url, "/sapi/v1/capital/withdraw/apply", alice.api_key, alice.secret,
        {"coin": xs.a("USDT"), "address": "0x" + "cd" * 20, "amount": "50"},
    )  # fmt: skip
    assert applied.status_code == 200, applied.text
    usdt = {c["coin"]: c for c in alice.ok("/sapi/v1/capital/config/getall")}[xs.a("USDT")]
    # 1000 - 100 locked in the order - 51 (50 and the 1 USDT network fee) on its way out.
    assert (usdt["free"], usdt["locked"], usdt["withdrawing"]) == ("849", "100", "51")


def test_a_second_account_sees_only_its_own_balances(xs):
    alice = _caller(xs, credit={"ETH": "3"})
    bob = _caller(xs)
    assert {c["coin"]: c["free"] for c in alice.ok("/sapi/v1/capital/config/getall")}[xs.a("ETH")] == "3"
    assert {c["coin"]: c["free"] for c in bob.ok("/sapi/v1/capital/config/getall")}[xs.a("ETH")] == "0"


def test_the_wallet_routes_need_a_signed_read_key(xs):
    trader = _caller(xs, scopes=("trade",))
    for path in ("/sapi/v1/capital/config/getall", "/sapi/v1/asset/assetDetail", "/sapi/v1/asset/tradeFee",
                 "/sapi/v1/capital/deposit/address/list", "/sapi/v1/capital/deposit/address",
                 "/api/v3/account/commission"):  # fmt: skip
        _refused(trader.get(path, coin=xs.a("BTC"), symbol=xs.a("BTC") + xs.a("USDT")), -2015, "'read' scope")
        unsigned = httpx.get(f"{xs.url}{path}?coin={xs.a('BTC')}")
        assert unsigned.json()["reason"] == "signature_missing", unsigned.text


# -- asset/assetDetail -------------------------------------------------------------------------


def test_asset_detail(xs):
    alice = _caller(xs)
    every = alice.ok("/sapi/v1/asset/assetDetail")
    assert set(every) == set(xs.services.exchange.assets)
    assert every[xs.a("BTC")] == {
        "minWithdrawAmount": "0.001", "depositStatus": True, "withdrawFee": "0.0002", "withdrawStatus": True,
        "depositTip": "",
    }  # fmt: skip
    assert alice.ok("/sapi/v1/asset/assetDetail", asset=xs.a("USDT").lower()) == {xs.a("USDT"): every[xs.a("USDT")]}
    _refused(alice.get("/sapi/v1/asset/assetDetail", asset="DOGE"), -1102, "Unknown coin 'DOGE'")


# -- capital/deposit/address -------------------------------------------------------------------


def test_deposit_address_is_per_account_per_network_and_stable(xs):
    alice, bob = _caller(xs), _caller(xs)
    wallet = xs.services.exchange.wallet
    addresses = {}
    for coin in ("BTC", "ETH", "USDT"):
        doc = alice.ok("/sapi/v1/capital/deposit/address", coin=xs.a(coin))
        assert set(doc) == {"address", "coin", "tag", "url"} and doc["coin"] == xs.a(coin) and doc["tag"] == ""
        assert wallet.asset(xs.a(coin)).valid_address(doc["address"])  # another account may withdraw to it
        assert alice.ok("/sapi/v1/capital/deposit/address", coin=xs.a(coin))["address"] == doc["address"]
        assert bob.ok("/sapi/v1/capital/deposit/address", coin=xs.a(coin))["address"] != doc["address"]
        addresses[coin] = doc["address"]
    assert re.fullmatch("0x[0-9a-f]{40}", addresses["ETH"]) and addresses["USDT"] == addresses["ETH"]
    assert re.fullmatch("bc1q[02-9ac-hj-np-z]{38}", addresses["BTC"])
    assert addresses["BTC"] == deposit_address(alice.user_id, wallet.asset(xs.a("BTC")))
    with_network = alice.ok("/sapi/v1/capital/deposit/address", coin=xs.a("usdt").lower(), network="eth")
    assert with_network["address"] == addresses["USDT"] and with_network["coin"] == xs.a("USDT")
    assert alice.ok("/sapi/v1/capital/deposit/address/list", coin=xs.a("BTC")) == [
        {"coin": xs.a("BTC"), "address": addresses["BTC"], "tag": "", "isDefault": 1}
    ]


def test_one_account_can_withdraw_to_anothers_deposit_address(xs):
    alice = _caller(xs, scopes=("read", "withdraw"), credit={"ETH": "1"}, ips=["127.0.0.1/32", "::1"])
    bob = _caller(xs)
    to = bob.ok("/sapi/v1/capital/deposit/address", coin=xs.a("ETH"))["address"]
    r = signed_request("POST", xs.url, "/sapi/v1/capital/withdraw/apply", alice.api_key, alice.secret,
                       {"coin": xs.a("ETH"), "address": to, "amount": "0.5"})  # fmt: skip
    assert r.status_code == 200, r.text
    [w] = alice.ok("/sapi/v1/capital/withdraw/history", coin=xs.a("ETH"))
    assert w["address"] == to and w["id"] == r.json()["id"]


@pytest.mark.parametrize(
    ("params", "code", "fragment"),
    [
        ({}, -1102, "Mandatory parameter 'coin' was not sent"),
        ({"coin": ""}, -1102, "Mandatory parameter 'coin' was not sent"),
        ({"coin": "DOGE"}, -1102, "Unknown coin 'DOGE'"),
        ({"coin": "X" * 17}, -1102, "coin"),
        ({"coin": "BTC\x00"}, -1100, "coin"),
        ({"coin": "USDT", "network": "TRX"}, -1102, "Network 'TRX' is not available for USDT"),
        ({"coin": "BTC", "network": "ETH"}, -1102, "Network 'ETH' is not available for BTC; use BTC"),
        ({"coin": "BTC", "network": "N" * 17}, -1102, "network"),
    ],
)
@pytest.mark.parametrize("path", ["/sapi/v1/capital/deposit/address", "/sapi/v1/capital/deposit/address/list"])
def test_deposit_address_bad_input(xs, path, params, code, fragment):
    alice = _caller(xs)
    named = {k: (xs.a(v) if k == "coin" and v in ("BTC", "USDT") else v) for k, v in params.items()}
    fragment = fragment.replace(" USDT", " " + xs.a("USDT")).replace(" BTC;", " " + xs.a("BTC") + ";")
    _refused(alice.get(path, **named), code, fragment)


# -- asset/tradeFee and account/commission ------------------------------------------------------


def test_trade_fees(xs):
    alice = _caller(xs)
    fees = alice.ok("/sapi/v1/asset/tradeFee")
    markets = xs.services.exchange.markets
    assert fees == [{"symbol": s, "makerCommission": "0.001", "takerCommission": "0.001"} for s in markets]
    sym = xs.a("ETH") + xs.a("BTC")
    assert alice.ok("/sapi/v1/asset/tradeFee", symbol=sym.lower()) == [
        {"symbol": sym, "makerCommission": "0.001", "takerCommission": "0.001"}
    ]
    body = _refused(alice.get("/sapi/v1/asset/tradeFee", symbol="DOGEUSDT"), -1121, "Invalid symbol.")
    assert body["reason"] == "unknown_symbol"


def test_commission_rates(xs):
    alice = _caller(xs)
    sym = xs.a("BTC") + xs.a("USDT")
    zero = {"maker": "0.00000000", "taker": "0.00000000", "buyer": "0.00000000", "seller": "0.00000000"}
    assert alice.ok("/api/v3/account/commission", symbol=sym) == {
        "symbol": sym,
        "standardCommission": {**zero, "maker": "0.00100000", "taker": "0.00100000"},
        "specialCommission": zero,
        "taxCommission": zero,
        "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "",
                     "discount": "0.00000000"},
    }  # fmt: skip
    _refused(alice.get("/api/v3/account/commission"), -1102, "Mandatory parameter 'symbol' was not sent")
    _refused(alice.get("/api/v3/account/commission", symbol="NOPE"), -1121, "Invalid symbol.")


@pytest.mark.parametrize("path", ["/sapi/v1/asset/tradeFee", "/api/v3/account/commission"])
@pytest.mark.parametrize("symbol", ["\x00", "BTC USDT", "x" * 200, "１２３", "\u202e", "%00", '["BTCUSDT"]'])
def test_fee_routes_refuse_hostile_symbols_with_a_binance_error(xs, path, symbol):
    r = _caller(xs).get(path, symbol=symbol)
    assert r.status_code == 400, r.text
    assert r.json()["code"] in (-1100, -1102, -1121) and r.json()["msg"], r.text


@pytest.mark.parametrize("name", ["coin", "network", "asset"])
@pytest.mark.parametrize("value", ["\x00", "\r\n", "x" * 5000, "١٢٣", "\ud7ff", "null", "[]", "-1"])
def test_wallet_routes_never_answer_5xx(xs, name, value):
    alice = _caller(xs)
    for path in ("/sapi/v1/capital/deposit/address", "/sapi/v1/asset/assetDetail"):
        params = {"coin": xs.a("BTC"), name: value}
        r = alice.get(path, **params)
        assert r.status_code < 500, r.text
        if r.status_code >= 400:
            assert isinstance(r.json()["code"], int) and r.json()["msg"], r.text


# -- public: system status, margin and futures --------------------------------------------------


def test_system_status_is_public(xs):
    r = httpx.get(xs.url + "/sapi/v1/system/status")
    assert r.status_code == 200 and r.json() == {"status": 0, "msg": "normal"}


def test_system_status_without_the_exchange(settings, services):
    """A server that runs without the exchange says so, and its wallet routes answer 503."""
    from keyplane.api.app import create_app

    srv = start_in_thread(create_app(settings, dataclasses.replace(services, exchange=None)))
    try:
        assert httpx.get(srv.url + "/sapi/v1/system/status").json() == {"status": 1, "msg": "system_maintenance"}
        user = services.accounts.create_user(f"n{secrets.token_hex(6)}@example.com", "correct horse battery staple")
        issued = services.keys.create(user.id, scopes=("read",), restrictions=services.keys.build_restrictions(),
                                      key_type="hmac", step_up=StepUp.operator())  # fmt: skip
        r = signed_request("GET", srv.url, "/sapi/v1/capital/config/getall", issued.info.api_key, issued.secret)
        assert r.status_code == 503 and isinstance(r.json()["code"], int), r.text
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("path", "listing"),
    [
        ("/fapi/v1/exchangeInfo", "symbols"),
        ("/dapi/v1/exchangeInfo", "symbols"),
        ("/eapi/v1/exchangeInfo", "optionSymbols"),
    ],
)
def test_futures_and_options_have_no_markets(xs, path, listing):
    body = httpx.get(xs.url + path).json()
    assert body[listing] == [] and body["timezone"] == "UTC" and "code" not in body
    assert abs(body["serverTime"] - httpx.get(xs.url + "/api/v3/time").json()["serverTime"]) < 60_000


@pytest.mark.parametrize("path", ["/sapi/v1/margin/allPairs", "/sapi/v1/margin/isolated/allPairs"])
def test_no_margin_pairs_signed_or_not(xs, path):
    assert httpx.get(xs.url + path).json() == []
    alice = _caller(xs)
    assert alice.ok(path) == []  # ccxt signs these; the signature is not needed, and does no harm
    # A spot market is never marked as tradable on margin.
    info = httpx.get(xs.url + "/api/v3/exchangeInfo").json()
    assert {s["isMarginTradingAllowed"] for s in info["symbols"]} == {False}


def test_withdraw_max_is_the_largest_amount_the_ledger_holds(xs):
    usdt = xs.services.exchange.assets[xs.a("USDT")]
    coins = {c["coin"]: c for c in _caller(xs).ok("/sapi/v1/capital/config/getall")}
    top = Decimal(coins[xs.a("USDT")]["networkList"][0]["withdrawMax"]) + Decimal(usdt.plain(usdt.withdraw_fee))
    assert top == Decimal(2**63 - 1).scaleb(-usdt.decimals)
