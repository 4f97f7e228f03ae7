"""The console's HTML forms over real HTTP: every bad input is shown next to its field, with no
traceback in the server log; the secret is shown once; sessions, CSRF and throttling hold."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from keyplane.accounts.models import AccountSession
from keyplane.api.app import create_app
from keyplane.keys.models import ApiKey
from keyplane.services import Services, build_services
from kptest.backends import db_scope
from kptest.clients import ed25519_keypair
from kptest.console import PASSWORD, ConsoleClient, csrf_in, new_email
from kptest.server import ThreadServer, start_in_thread

DRIFT = 10


@pytest.fixture(scope=db_scope("module"))
def site(make_settings) -> Iterator[tuple[ThreadServer, Services]]:
    settings = make_settings(totp_drift_steps=DRIFT)
    services = build_services(settings)
    srv = start_in_thread(create_app(settings, services))
    yield srv, services
    srv.stop()
    services.close()


@pytest.fixture(autouse=True)
def no_server_tracebacks(caplog) -> Iterator[None]:
    caplog.set_level(logging.WARNING)
    yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def field_error(html: str, field: str) -> str:
    """The error text shown next to ``field`` (the element the control's aria-describedby names)."""
    m = re.search(rf'<p class="error" id="{re.escape(field)}-error" role="alert">([^<]*)</p>', html)
    assert m, f"no error shown for {field}"
    assert 'aria-describedby="' in html
    return m.group(1)


class Browser:
    """Form posts the way a browser sends them, with the CSRF token read from the page."""

    def __init__(self, url: str) -> None:
        self.c = ConsoleClient(url, drift=DRIFT)
        self.http = self.c.http

    def get(self, path: str):
        return self.http.get(path)

    def submit(self, page: str, action: str, data: dict, with_csrf: bool = True):
        html = self.get(page).text
        body = dict(data)
        if with_csrf:
            body["csrf_token"] = csrf_in(html)
        return self.http.post(action, data=body)

    def signup(self) -> str:
        self.c.email = new_email()
        r = self.submit("/signup", "/signup", {"email": self.c.email, "password": PASSWORD})
        assert r.status_code == 303 and r.headers["location"] == "/security"
        return self.c.email

    def enrol(self) -> None:
        html = self.submit("/security", "/security/totp/start", {}).text
        key = re.search(r'id="manual-key"[^>]*>([A-Z2-7 ]+)<', html)
        assert key and "<svg" in html
        from kptest.console import TotpClock

        self.c.clock = TotpClock(key.group(1).replace(" ", ""), DRIFT)
        r = self.http.post("/security/totp/confirm", data={"totp": self.c.code(), "csrf_token": csrf_in(html)})
        assert r.status_code == 200 and "shown only once" in r.text
        self.codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", r.text)
        assert len(self.codes) == 10

    def create(self, **fields):
        data = {"label": "k", "scopes": ["read"], "key_type": "hmac", **fields}
        data.setdefault("totp", self.c.code())
        return self.submit("/keys/new", "/keys/new", data)


@pytest.fixture
def browser(site) -> Iterator[Browser]:
    b = Browser(site[0].url)
    yield b
    b.c.close()


def keys_of(services: Services, email: str) -> int:
    info = services.accounts.get_by_email(email)
    assert info is not None
    with services.db.read() as s:
        return int(s.execute(select(func.count()).select_from(ApiKey).where(ApiKey.user_id == info.id)).scalar_one())


def test_forms_have_labels_and_csrf_tokens(browser):
    for path in ("/signup", "/login"):
        html = browser.get(path).text
        assert 'name="csrf_token"' in html
        for control in re.findall(r'<input id="([^"]+)"', html):
            assert f'<label for="{control}">' in html
    assert "HttpOnly" in browser.get("/login").headers["set-cookie"]


def test_pages_need_login(browser):
    for path in ("/keys", "/keys/new", "/activity", "/security", "/keys/revoke-all"):
        r = browser.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_signup_errors_are_shown_next_to_the_field(browser):
    email = browser.signup()
    browser.http.cookies.clear()
    r = browser.submit("/signup", "/signup", {"email": email, "password": PASSWORD})
    assert r.status_code == 409 and "already exists" in field_error(r.text, "email")
    r = browser.submit("/signup", "/signup", {"email": new_email(), "password": "password2024"})
    assert r.status_code == 400 and "common" in field_error(r.text, "password")
    r = browser.submit("/signup", "/signup", {"email": new_email(), "password": PASSWORD}, with_csrf=False)
    assert r.status_code == 403 and "security token" in field_error(r.text, "csrf_token")


def test_login_with_2fa_and_wrong_inputs(browser):
    email = browser.signup()
    browser.enrol()
    browser.http.cookies.clear()
    r = browser.submit("/login", "/login", {"email": email, "password": "wrong password!"})
    assert r.status_code == 401 and "wrong email or password" in field_error(r.text, "password")
    r = browser.submit("/login", "/login", {"email": email, "password": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/login/code"
    assert browser.get("/keys").headers["location"] == "/login/code"  # password alone opens nothing
    r = browser.submit("/login/code", "/login/code", {"totp": "123456"})
    assert r.status_code == 400 and "wrong" in field_error(r.text, "totp")
    code = browser.c.code()
    r = browser.submit("/login/code", "/login/code", {"totp": code})
    assert r.status_code == 303 and r.headers["location"] == "/keys"
    # The same code again (a replay) is refused, shown next to the field.
    browser.http.post("/logout", data={"csrf_token": csrf_in(browser.get("/keys").text)})
    browser.submit("/login", "/login", {"email": email, "password": PASSWORD})
    r = browser.submit("/login/code", "/login/code", {"totp": code})
    assert r.status_code == 400 and "already used" in field_error(r.text, "totp")


def test_expired_session_sends_back_to_login_with_a_message(browser, site):
    email = browser.signup()
    info = site[1].accounts.get_by_email(email)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    with site[1].db.transaction() as s:
        s.execute(AccountSession.__table__.update().where(AccountSession.user_id == info.id).values(last_seen_at=old))
    r = browser.get("/keys")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?expired=1")
    page = browser.get(r.headers["location"]).text
    assert "Your session expired" in page


def test_secret_is_shown_once(browser, site):
    email = browser.signup()
    browser.enrol()
    r = browser.create(label="once")
    assert r.status_code == 201
    secret = re.search(r'id="secret" class="secret">(kps_[A-Za-z0-9]+)<', r.text).group(1)
    api_key = re.search(r'id="api-key">([^<]+)<', r.text).group(1)
    assert "shown only this once" in r.text and r.headers["cache-control"] == "no-store"
    assert secret not in str(r.headers) and secret not in str(browser.http.cookies)
    for path in ("/keys", f"/keys/{api_key}", "/activity"):
        page = browser.get(path).text
        assert api_key in page and secret not in page
    assert keys_of(site[1], email) == 1


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"ips": "10.0.0.0/33"}, "ips", "not an IPv4/IPv6"),
        ({"ips": "\n".join(f"10.0.{i}.0/24" for i in range(31))}, "ips", "at most 30"),
        (
            {"key_type": "ed25519", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"},
            "public_key",
            "does not parse",
        ),
        ({"key_type": "ed25519", "public_key": "PRIVATE"}, "public_key", "private key"),
        ({"scopes": ["read", "superuser"]}, "scopes", "unknown scope"),
        ({"scopes": ["read", "withdraw"]}, "ips", "needs an IP allowlist"),
        ({"totp": ""}, "totp", "6-digit code"),
        ({"totp": "000000"}, "totp", "wrong"),
    ],
)
def test_create_key_errors_are_shown_next_to_the_field(browser, site, fields, field, text):
    email = browser.signup()
    browser.enrol()
    if fields.get("public_key") == "PRIVATE":
        fields = {**fields, "public_key": ed25519_keypair()[0]}
    r = browser.create(**fields)
    assert r.status_code in (400, 403)
    assert text in field_error(r.text, field)
    assert 'value="k"' in r.text  # what was typed is kept
    assert keys_of(site[1], email) == 0


def test_create_key_without_csrf_is_refused(browser, site):
    email = browser.signup()
    browser.enrol()
    r = browser.http.post("/keys/new", data={"label": "x", "scopes": "read", "totp": browser.c.code()})
    assert r.status_code == 403 and "security token" in field_error(r.text, "csrf_token")
    assert keys_of(site[1], email) == 0


def test_edit_rotate_disable_revoke_in_the_console(browser):
    browser.signup()
    browser.enrol()
    r = browser.create(label="edit-me", scopes=["read", "trade"], ips="10.0.0.0/8")
    api_key = re.search(r'id="api-key">([^<]+)<', r.text).group(1)
    page = f"/keys/{api_key}"
    narrow = {"label": "edit-me", "scopes": ["read"], "ips": "10.1.0.0/16", "totp": ""}
    r = browser.submit(page, f"{page}/edit", narrow)
    assert r.status_code == 303
    html = browser.get(page).text
    assert "10.1.0.0/16" in html and 'id="scope-trade" name="scopes" value="trade">' in html
    wide = {**narrow, "scopes": ["read", "trade"]}
    r = browser.submit(page, f"{page}/edit", wide)
    assert r.status_code == 403 and "adds scope trade" in field_error(r.text, "totp")
    r = browser.submit(page, f"{page}/edit", {**wide, "totp": browser.c.code()})
    assert r.status_code == 303
    r = browser.submit(page, f"{page}/rotate", {"grace": "2h", "rotate_totp": browser.c.code()})
    assert r.status_code == 200 and re.search(r'id="secret" class="secret">kps_', r.text)
    assert "keeps working until" in r.text
    r = browser.submit(page, f"{page}/rotate", {"grace": "2h", "rotate_totp": ""})
    assert "6-digit code" in field_error(r.text, "rotate_totp")
    assert browser.submit(page, f"{page}/disable", {}).status_code == 303
    assert 'id="key-status">disabled<' in browser.get(page).text
    r = browser.submit(page, f"{page}/enable", {"enable_totp": "000000"})
    assert "wrong" in field_error(r.text, "enable_totp")
    assert browser.submit(page, f"{page}/enable", {"enable_totp": browser.c.code()}).status_code == 303
    assert browser.submit(f"{page}/revoke", f"{page}/revoke", {}).status_code == 303
    assert 'id="key-status">revoked<' in browser.get(page).text
    r = browser.submit("/keys/revoke-all", "/keys/revoke-all", {"totp": browser.c.code()})
    assert "tick the box" in field_error(r.text, "confirm")
    activity = browser.get("/activity").text
    for text in ("Key created", "Key changed", "Key rotated", "Key disabled", "Key enabled", "Key revoked"):
        assert text in activity


def test_login_is_throttled_per_account_and_ip(make_settings):
    settings = make_settings(login_limit_per_user="3/hour", login_limit_per_ip="6/hour")
    services = build_services(settings)
    srv = start_in_thread(create_app(settings, services))
    b = Browser(srv.url)
    try:
        email = b.signup()
        b.http.cookies.clear()
        for _ in range(3):
            r = b.submit("/login", "/login", {"email": email, "password": "wrong password!"})
            assert r.status_code == 401
        r = b.submit("/login", "/login", {"email": email, "password": PASSWORD})  # even the right one
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        assert "too many login attempts" in field_error(r.text, "password")
        for _ in range(3):  # other accounts from the same IP, until the IP's limit
            b.submit("/login", "/login", {"email": new_email(), "password": "wrong password!"})
        r = b.submit("/login", "/login", {"email": new_email(), "password": "wrong password!"})
        assert r.status_code == 429
    finally:
        b.c.close()
        srv.stop()
        services.close()


def test_totp_attempts_are_throttled(make_settings):
    settings = make_settings(totp_limit_per_user="3/hour", totp_drift_steps=DRIFT)
    services = build_services(settings)
    srv = start_in_thread(create_app(settings, services))
    c = ConsoleClient(srv.url, drift=DRIFT)
    try:
        c.ready()
        for _ in range(3):
            assert c.api("POST", "/v1/account/keys", {"totp": "000000"}).status_code == 400
        r = c.api("POST", "/v1/account/keys", {"totp": c.code()})
        assert r.status_code == 429 and r.json()["error"] == "too_many_attempts"
        assert "Retry-After" in r.headers
    finally:
        c.close()
        srv.stop()
        services.close()
