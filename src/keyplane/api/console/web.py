"""Pieces every console page and ``/v1/account`` route uses.

- :func:`page_user` (as ``PageUser``) / :func:`api_user`: FastAPI dependencies that return the logged-in
  :class:`ConsoleUser`. A page without a session redirects to ``/login``; the JSON API answers 401.
- :func:`check_csrf`: the CSRF check for a form (``csrf_token`` field) or a JSON call
  (``X-CSRF-Token`` header).
- :func:`verify_step_up`: a fresh TOTP code for a change that widens what the account can do.
- :func:`render`: a template with the common context (user, CSRF token, nav).

Cookies: ``kp_session`` (the session token) and, before login, ``kp_csrf`` (a double-submit token
for the sign-up and log-in forms). Both are HttpOnly and SameSite=Lax, and Secure over https or
when ``KEYPLANE_COOKIE_SECURE=true``.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from keyplane.accounts.errors import CsrfFailed, LoginRequired, SessionExpired, SignedKeyRefused
from keyplane.accounts.identity import Identity
from keyplane.accounts.sessions import SessionInfo
from keyplane.accounts.stepup import StepUp
from keyplane.api.state import app_state
from keyplane.auth.clientip import client_ip as resolve_client_ip
from keyplane.keys.manage import KeyManager
from keyplane.keys.service import Actor
from keyplane.parsing import bad_character
from keyplane.services import Services

SESSION_COOKIE = "kp_session"
ANON_CSRF_COOKIE = "kp_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{20,100}", re.ASCII)
# Headers that mark a request signed with an API key (binance dialect, RFC 9421).
_SIGNED_HEADERS = ("x-mbx-apikey", "signature", "signature-input")

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
ResponseT = TypeVar("ResponseT", bound=Response)


class PageRedirect(Exception):
    """Raised by page dependencies; the console's handler turns it into a 303 redirect."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    id: int
    email: str
    csrf_token: str
    token: str
    ip: str | None

    def __repr__(self) -> str:
        return f"ConsoleUser(id={self.id}, email={self.email!r})"

    @property
    def actor(self) -> Actor:
        return Actor(f"user:{self.id}", self.ip)


def services_of(request: Request) -> Services:
    return app_state(request).services


def identity_of(request: Request) -> Identity:
    ident = services_of(request).identity
    if ident is None:  # pragma: no cover - build_services always sets it
        raise LoginRequired("accounts are not configured on this server")
    return ident


def key_manager(request: Request) -> KeyManager:
    manager = app_state(request).key_manager
    if manager is None:  # pragma: no cover - build_services always sets up accounts
        raise LoginRequired("accounts are not configured on this server")
    return manager


def request_ip(request: Request) -> str | None:
    """The client's IP by the same rules as signed requests (``auth/clientip.py``)."""
    peer = request.client.host if request.client else None
    ip = resolve_client_ip(
        peer, request.headers.getlist("x-forwarded-for"), services_of(request).settings.trusted_proxies
    )
    return None if ip is None else str(ip)


def user_agent(request: Request) -> str:
    """The User-Agent as stored with a session: printable characters only, at most 200."""
    value = request.headers.get("user-agent", "")
    if bad_character(value) is not None:
        value = "".join(ch for ch in value if bad_character(ch) is None)
    return value[:200]


def _cookie_flags(request: Request) -> dict[str, Any]:
    """What every console cookie is: HttpOnly, SameSite=Lax, and Secure over https or when configured."""
    secure = services_of(request).settings.cookie_secure or request.url.scheme == "https"
    return {"path": "/", "secure": secure, "httponly": True, "samesite": "lax"}


# The cookie setters return the response they were given, so a route can return it at once.
def set_session_cookie(request: Request, response: ResponseT, token: str) -> ResponseT:
    max_age = services_of(request).settings.session_absolute_s
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, **_cookie_flags(request))
    return response


def clear_session_cookie(request: Request, response: ResponseT) -> ResponseT:
    response.delete_cookie(SESSION_COOKIE, **_cookie_flags(request))
    return response


def anon_csrf_token(request: Request) -> str:
    """The double-submit token for forms shown before login: the cookie's, or a new one."""
    token = request.cookies.get(ANON_CSRF_COOKIE)
    if not token or not _TOKEN_RE.fullmatch(token):  # only a token this server could have made
        token = secrets.token_urlsafe(32)
    return token


def set_anon_csrf_cookie(request: Request, response: ResponseT, token: str) -> ResponseT:
    response.set_cookie(ANON_CSRF_COOKIE, token, **_cookie_flags(request))
    return response


def check_csrf(request: Request, expected: str | None, form_value: str | None = None) -> None:
    """Raise CsrfFailed unless the form field or the ``X-CSRF-Token`` header equals ``expected``."""
    given = form_value if form_value is not None else request.headers.get(CSRF_HEADER)
    if not given or not expected:
        raise CsrfFailed()
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace")):
        raise CsrfFailed()


def check_anon_csrf(request: Request, form_value: str | None) -> None:
    """The CSRF check for the log-in and sign-up forms (no session yet): double-submit cookie."""
    check_csrf(request, request.cookies.get(ANON_CSRF_COOKIE), form_value)


def _refuse_signed(request: Request) -> None:
    if any(h in request.headers for h in _SIGNED_HEADERS):
        raise SignedKeyRefused()


def _session(request: Request) -> SessionInfo:
    return identity_of(request).session(request.cookies.get(SESSION_COOKIE))


def _user(request: Request, info: SessionInfo) -> ConsoleUser:
    token = request.cookies.get(SESSION_COOKIE, "")
    return ConsoleUser(info.user_id, info.email, info.csrf_token, token, request_ip(request))


def page_user(request: Request) -> ConsoleUser:
    """The logged-in user of a console page; redirects to the log-in page when there is none."""
    _refuse_signed(request)
    try:
        info = _session(request)
    except SessionExpired as e:
        raise PageRedirect(f"/login?expired=1&next={quote(request.url.path)}") from e
    except LoginRequired as e:
        raise PageRedirect(f"/login?next={quote(request.url.path)}") from e
    if not info.full:
        raise PageRedirect("/login/code")
    return _user(request, info)


def api_user(request: Request) -> ConsoleUser:
    """The logged-in user of a ``/v1/account`` call. Raises LoginRequired/SessionExpired (401),
    SignedKeyRefused (an API-key-signed request) and, on a state-changing call, CsrfFailed."""
    _refuse_signed(request)
    info = _session(request)
    if not info.full:
        raise LoginRequired("finish logging in with your authentication code")
    user = _user(request, info)
    if request.method not in SAFE_METHODS:
        check_csrf(request, user.csrf_token)
    return user


PageUser = Annotated[ConsoleUser, Depends(page_user)]
FormStr = Annotated[str, Form()]


def verify_step_up(request: Request, user: ConsoleUser, code: str) -> StepUp:
    """A fresh TOTP code from ``user``, as the StepUp proof a widening takes; raises TotpInvalid,
    TwoFactorRequired or Throttled."""
    return identity_of(request).verify_step_up(user.id, code, ip=user.ip)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: ConsoleUser | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    ctx: dict[str, Any] = {"user": user, "csrf_token": user.csrf_token if user else "", "errors": {}}
    ctx.update(context or {})
    response = templates.TemplateResponse(request, template, ctx, status_code=status_code)
    # Pages may carry a secret shown once: never cache them, never send the URL elsewhere.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303)


def error_context(error: Exception, *, totp_field: str = "totp") -> dict[str, Any]:
    """``errors``: field name -> message, for showing an error next to its field. A page with
    several code fields names the one the error concerns ``totp_field``."""
    field = getattr(error, "field", None) or "form"
    message = getattr(error, "message", None) or str(error)
    return {"errors": {totp_field if field == "totp" else field: message}}
