"""A real HTTP client for the console and /v1/account: signs up, enrols TOTP, logs in, and keeps
the session cookie and CSRF token the way a browser would."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

import httpx
import pyotp

PASSWORD = "orbit-lantern-meadow-42"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
_KEY_RE = re.compile(r'id="manual-key"[^>]*>([A-Z2-7 ]+)<')


def csrf_in(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def new_email() -> str:
    return f"c{secrets.token_hex(6)}@example.com"


class TotpClock:
    """Codes for a TOTP secret that never repeat a time step (the server refuses a reused code).

    ``drift`` is the server's ``totp_drift_steps``: a new code may come from a step up to that far
    ahead; past it, this waits for the clock.
    """

    def __init__(self, secret: str, drift: int = 1) -> None:
        self.totp = pyotp.TOTP(secret)
        self.drift = drift
        self.last = -1

    def code(self) -> str:
        now_step = int(time.time() // 30)
        step = max(now_step, self.last + 1)
        if step > now_step + self.drift:
            time.sleep(30 - time.time() % 30 + 0.2)
            step = max(int(time.time() // 30), self.last + 1)
        self.last = step
        return str(self.totp.at(step * 30))


class ConsoleClient:
    def __init__(self, base_url: str, drift: int = 1) -> None:
        self.drift = drift
        self.http = httpx.Client(base_url=base_url, follow_redirects=False, timeout=20)
        self.email = ""
        self.password = PASSWORD
        self.csrf = ""
        self.clock: TotpClock | None = None
        self.recovery_codes: list[str] = []

    def close(self) -> None:
        self.http.close()

    # JSON API ------------------------------------------------------------------------------------

    def api(self, method: str, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        headers = {"X-CSRF-Token": self.csrf} if self.csrf else {}
        headers.update(kw.pop("headers", {}))
        return self.http.request(method, path, json=json, headers=headers, **kw)

    def signup(self, email: str | None = None, password: str = PASSWORD) -> httpx.Response:
        self.email, self.password = email or new_email(), password
        token = self.http.get("/v1/account/csrf").json()["csrf_token"]
        r = self.http.post(
            "/v1/account/signup",
            json={"email": self.email, "password": password},
            headers={"X-CSRF-Token": token},
        )
        if r.status_code == 201:
            self.csrf = r.json()["csrf_token"]
        return r

    def enrol(self) -> list[str]:
        r = self.api("POST", "/v1/account/totp/enrol")
        assert r.status_code == 200, r.text
        self.clock = TotpClock(r.json()["secret"], self.drift)
        r = self.api("POST", "/v1/account/totp/confirm", {"totp": self.clock.code()})
        assert r.status_code == 200, r.text
        self.recovery_codes = r.json()["recovery_codes"]
        return self.recovery_codes

    def code(self) -> str:
        assert self.clock is not None
        return self.clock.code()

    def login(self, password: str | None = None, code: str | None = None) -> httpx.Response:
        self.http.cookies.clear()
        self.csrf = ""
        token = self.http.get("/v1/account/csrf").json()["csrf_token"]
        r = self.http.post(
            "/v1/account/login",
            json={"email": self.email, "password": password or self.password},
            headers={"X-CSRF-Token": token},
        )
        if r.status_code != 200:
            return r
        self.csrf = r.json()["csrf_token"]
        if r.json()["needs_totp"]:
            r = self.api("POST", "/v1/account/login/totp", {"totp": code or self.code()})
            if r.status_code == 200:
                self.csrf = r.json()["csrf_token"]
        return r

    def ready(self) -> ConsoleClient:
        """Signed up, TOTP enrolled, logged in."""
        assert self.signup().status_code == 201
        self.enrol()
        return self

    def create_key(self, **body: Any) -> httpx.Response:
        body.setdefault("totp", self.code())
        return self.api("POST", "/v1/account/keys", body)
