"""The console in real Chromium (Debian's package, driven by Playwright): sign up, enrol TOTP from the
key the page shows, log out and back in with a code, create a key and read its secret once, use it
from ccxt, edit with and without a code, rotate and revoke. Each step saves a screenshot under
``artifacts/screenshots/console/``. Also the accessibility baseline: labels and keyboard-only use."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import ccxt
import pytest

from keyplane.api.app import create_app
from keyplane.services import build_services
from kptest.backends import unavailable
from kptest.clients import ccxt_binance
from kptest.console import PASSWORD, TotpClock, new_email
from kptest.server import ThreadServer, start_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = os.environ.get("KEYPLANE_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots" / "console"
DRIFT = 10  # several fresh codes in one test without waiting for the clock


@pytest.fixture(scope="module")
def site(make_settings) -> Iterator[ThreadServer]:
    settings = make_settings(totp_drift_steps=DRIFT)
    services = build_services(settings)
    srv = start_in_thread(create_app(settings, services))
    yield srv
    srv.stop()
    services.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        unavailable(f"Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, site) -> Iterator[object]:
    context = chromium.new_context(base_url=site.url)  # type: ignore[attr-defined]
    pg = context.new_page()
    yield pg
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_labelled(page) -> None:
    """Every visible form control has a label (or an aria-label)."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden')
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.name || el.id)"""
    )
    assert unlabelled == [], f"controls without a label on {page.url}: {unlabelled}"


def signup_and_enrol(page, tag: str) -> TotpClock:
    email = new_email()
    page.goto("/signup")
    assert_labelled(page)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    shot(page, f"{tag}-01-signup")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/security")
    page.get_by_role("button", name="Set up two-factor authentication").click()
    assert page.locator(".qr svg").count() == 1
    key = page.locator("#manual-key").inner_text().replace(" ", "")
    clock = TotpClock(key, DRIFT)
    assert_labelled(page)
    shot(page, f"{tag}-02-totp-enrol")
    page.get_by_label("Authentication code").fill(clock.code())
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    assert page.locator("#recovery-codes li").count() == 10
    shot(page, f"{tag}-03-recovery-codes")
    page.email = email  # type: ignore[attr-defined]
    return clock


def test_console_end_to_end(page, site):
    clock = signup_and_enrol(page, "flow")
    email = page.email

    # Log out, and back in with a code.
    page.get_by_role("button", name=re.compile("Log out")).click()
    page.wait_for_url("**/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/login/code")
    shot(page, "flow-04-login-code")
    page.get_by_label("Authentication code").fill(clock.code())
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url("**/keys")
    shot(page, "flow-05-keys-empty")

    # Create a key; the secret is shown once.
    page.get_by_role("link", name="Create API key").click()
    assert_labelled(page)
    assert "openssl genpkey -algorithm ed25519" in page.locator("#openssl-hint").inner_text()
    page.get_by_label("Label").fill("browser bot")
    assert page.get_by_label(re.compile("^Read")).is_checked()
    assert not page.get_by_label(re.compile("^Trade")).is_checked()
    assert not page.get_by_label(re.compile("^Withdraw")).is_checked()
    page.get_by_label(re.compile("^Trade")).check()
    page.get_by_label("Authentication code").fill(clock.code())
    shot(page, "flow-06-create-form")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#secret").inner_text().strip()
    api_key = page.locator("#api-key").inner_text().strip()
    assert secret.startswith("kps_")
    assert page.get_by_role("button", name="Copy secret").is_visible()
    shot(page, "flow-07-secret-once")
    page.reload()  # the browser re-sends the form; the code is spent, so no new secret appears
    assert secret not in page.content()
    shot(page, "flow-08-after-reload")
    page.goto(f"/keys/{api_key}")
    assert secret not in page.content()

    # Use the key from ccxt against the same server.
    ex = ccxt_binance(site.url, api_key, secret)
    assert ex.fetch_balance()["info"]["canTrade"] is True

    # Edit: narrowing needs no code.
    page.goto(f"/keys/{api_key}")
    page.get_by_label(re.compile("^Trade")).uncheck()
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/keys/{api_key}?saved=1")
    assert not page.get_by_label(re.compile("^Trade")).is_checked()
    shot(page, "flow-09-narrowed")
    # Widening without a code is refused next to the code field; with one it passes.
    page.get_by_label(re.compile("^Trade")).check()
    page.get_by_role("button", name="Save changes").click()
    assert "adds scope trade" in page.locator("#totp-error").inner_text()
    shot(page, "flow-10-widen-needs-code")
    page.get_by_label(re.compile("^Trade")).check()
    page.locator("#totp").fill(clock.code())
    page.get_by_role("button", name="Save changes").click()
    page.wait_for_url(f"**/keys/{api_key}?saved=1")
    assert page.get_by_label(re.compile("^Trade")).is_checked()
    shot(page, "flow-11-widened")

    # Rotate: a new secret, shown once; the old one works during the grace period.
    page.get_by_label("Grace period for the old credential").fill("1h")
    page.locator("#rotate_totp").fill(clock.code())
    page.get_by_role("button", name="Rotate key").click()
    new_secret = page.locator("#secret").inner_text().strip()
    assert new_secret.startswith("kps_") and new_secret != secret
    assert "keeps working until" in page.content()
    shot(page, "flow-12-rotated")
    assert ccxt_binance(site.url, api_key, new_secret).fetch_balance()["info"]["accountType"] == "SPOT"
    assert ccxt_binance(site.url, api_key, secret).fetch_balance()["info"]["accountType"] == "SPOT"

    # Revoke, behind a confirmation page.
    page.goto(f"/keys/{api_key}")
    page.get_by_role("link", name="Revoke key…").click()
    shot(page, "flow-13-revoke-confirm")
    page.get_by_role("button", name="Revoke this key").click()
    assert page.locator("#key-status").inner_text() == "revoked"
    shot(page, "flow-14-revoked")
    with pytest.raises(ccxt.AuthenticationError):
        ccxt_binance(site.url, api_key, new_secret).fetch_balance()

    page.goto("/activity")
    for text in ("Key created", "Key changed", "Key rotated", "Key revoked", "Logged in"):
        assert page.get_by_text(text).count() >= 1
    shot(page, "flow-15-activity")


def test_bad_inputs_show_errors_next_to_fields(page):
    clock = signup_and_enrol(page, "errors")
    page.goto("/keys/new")
    page.get_by_label("IP allowlist", exact=True).fill("10.0.0.0/33")
    page.get_by_label("Authentication code").fill(clock.code())
    page.get_by_role("button", name="Create key").click()
    assert "not an IPv4/IPv6" in page.locator("#ips-error").inner_text()
    assert page.get_by_label("IP allowlist", exact=True).get_attribute("aria-invalid") == "true"
    shot(page, "errors-01-bad-cidr")
    page.get_by_label("IP allowlist", exact=True).fill("")
    page.get_by_label(re.compile("^Withdraw")).check()
    page.get_by_label("Authentication code").fill(clock.code())
    page.get_by_role("button", name="Create key").click()
    assert "needs an IP allowlist" in page.locator("#ips-error").inner_text()
    shot(page, "errors-02-withdraw-without-allowlist")
    page.get_by_label(re.compile("^Withdraw")).uncheck()
    page.get_by_role("radio", name=re.compile("^Ed25519")).check()
    page.get_by_label("Ed25519 public key (PEM)").fill("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
    page.get_by_label("Authentication code").fill(clock.code())
    page.get_by_role("button", name="Create key").click()
    assert "does not parse" in page.locator("#public_key-error").inner_text()
    shot(page, "errors-03-bad-pem")
    page.goto("/keys")
    assert "You have no API keys yet." in page.content()


def tab_to(page, selector: str, limit: int = 40) -> None:
    """Press Tab until ``selector`` has focus (the keyboard is the only input)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(sel) => document.activeElement === document.querySelector(sel)", selector):
            return
    raise AssertionError(f"{selector} cannot be reached with Tab on {page.url}")


def test_keyboard_only_signup_enrol_and_create(page):
    email = new_email()
    page.goto("/signup")
    tab_to(page, "#email")
    page.keyboard.type(email)
    tab_to(page, "#password")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/security")
    tab_to(page, "form[action='/security/totp/start'] button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#manual-key")
    clock = TotpClock(page.locator("#manual-key").inner_text().replace(" ", ""), DRIFT)
    tab_to(page, "#totp")
    page.keyboard.type(clock.code())
    page.keyboard.press("Enter")
    page.wait_for_selector("#recovery-codes")
    tab_to(page, "a[href='/keys']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/keys")
    tab_to(page, "a[href='/keys/new']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/keys/new")
    tab_to(page, "#label")
    page.keyboard.type("keyboard key")
    tab_to(page, "#totp")
    page.keyboard.type(clock.code())
    page.keyboard.press("Enter")
    page.wait_for_selector("#secret")
    assert page.locator("#secret").inner_text().startswith("kps_")
    tab_to(page, "button[data-copy-target='secret']")
    shot(page, "keyboard-01-created")
    # The skip link is the first stop and moves focus to the content.
    page.goto("/keys")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    assert email in page.content()


def test_every_page_labels_its_controls(page):
    clock = signup_and_enrol(page, "labels")
    page.goto("/keys/new")
    page.get_by_label("Authentication code").fill(clock.code())
    page.get_by_role("button", name="Create key").click()
    api_key = page.locator("#api-key").inner_text().strip()
    for path in (
        "/keys",
        "/keys/new",
        f"/keys/{api_key}",
        f"/keys/{api_key}/revoke",
        "/keys/revoke-all",
        "/security",
        "/activity",
    ):
        page.goto(path)
        assert_labelled(page)
        assert page.locator("main h1").count() == 1
