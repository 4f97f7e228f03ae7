"""A real HTTP client for the console and /v1/account: signs up, enrols TOTP, logs in, and keeps
the session cookie and CSRF token the way a browser would."""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pyotp

PASSWORD = "orbit-lantern-meadow-42"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
_KEY_RE = re.compile(r'id="manual-key"[^>]*>([A-Z2-7 ]+)<')

STEP_S = 30  # the server's TOTP step (accounts/totp.py)
# The window's lowest step is handed out only while it has this long left in the window: a code
# from it must still be accepted when its request (or a browser form) reaches the server.
EDGE_S = 5.0


def csrf_in(html: str) -> str:
    m = _CSRF_RE.search(html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def new_email() -> str:
    return f"c{secrets.token_hex(6)}@example.com"


# Per secret, the last time step a code was handed out for, shared by every TotpClock on that secret
# (two clients with one authenticator must not hand out the same step twice).
_last_step: dict[str, int] = {}
_steps_lock = threading.Lock()


class TotpClock:
    """Codes for a TOTP secret that never repeat a time step, without waiting for the clock.

    The server accepts a code from its current step ± ``drift`` (its ``totp_drift_steps``), and only
    from a step after the last one it accepted (accounts/totp.py). So the codes climb through that
    window from its lowest step: 2 * drift + 1 fresh codes at once, one more every 30 s.

    When every step of the window is spent, ``rewind`` (a test that holds the server's database:
    see :func:`rewind_in`) moves the server's last accepted step back below the window, and the
    window's codes are fresh again. Without one nothing the server would accept exists yet: this
    then waits until the next step enters the window, the one wait left (no test of the suite
    spends that many codes; give such a test a wider ``totp_drift_steps`` or a ``rewind``).
    """

    def __init__(self, secret: str, drift: int = 1, rewind: Callable[[int], None] | None = None) -> None:
        self.totp = pyotp.TOTP(secret)
        self.secret = secret
        self.drift = drift
        self.rewind = rewind

    @property
    def last(self) -> int:
        """The last step handed out for this secret, -1 if none."""
        return _last_step.get(self.secret, -1)

    def code(self) -> str:
        with _steps_lock:
            now = time.time()
            current = int(now // STEP_S)
            lowest = current - self.drift
            if self.drift and STEP_S - now % STEP_S < EDGE_S:
                lowest += 1  # it leaves the window in a moment, perhaps before the code arrives
            step = max(lowest, self.last + 1)
            if step > current + self.drift and self.rewind is not None:
                self.rewind(lowest - 1)
                step = lowest
            _last_step[self.secret] = step
        if step > current + self.drift:
            # No rewind: wait until ``step`` enters the server's window (see the class docstring).
            time.sleep(max(0.0, (step - self.drift) * STEP_S - time.time() + 0.2))
        return str(self.totp.generate_otp(step))


def rewind_in(services: Any) -> Callable[[str, int], None]:
    """A ConsoleClient ``rewind`` for a server on ``services``' database: sets the account's last
    accepted TOTP step (``TotpCredential.last_counter``) to ``step``."""
    from keyplane.accounts.models import TotpCredential

    def rewind(email: str, step: int) -> None:
        user_id = services.keys.user_id_for_email(email)
        with services.db.transaction() as s:
            row = s.get(TotpCredential, user_id, with_for_update=True)
            assert row is not None, f"{email} has no TOTP credential to rewind"
            row.last_counter = step

    return rewind


class ConsoleClient:
    def __init__(self, base_url: str, drift: int = 1, rewind: Callable[[str, int], None] | None = None) -> None:
        self.drift = drift
        self.rewind = rewind
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
        rewind = self.rewind
        self.clock = TotpClock(
            r.json()["secret"], self.drift, None if rewind is None else lambda step: rewind(self.email, step)
        )
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
