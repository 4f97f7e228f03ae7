"""Console pages: sign up, log in (password, then a code), log out, and 2FA set-up."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keyplane.accounts.errors import AlreadyEnrolled, LoginRequired
from keyplane.api.console.web import (
    SESSION_COOKIE,
    FormStr,
    PageRedirect,
    PageUser,
    anon_csrf_token,
    check_anon_csrf,
    check_csrf,
    clear_session_cookie,
    error_context,
    identity_of,
    redirect,
    render,
    request_ip,
    set_anon_csrf_cookie,
    set_session_cookie,
    user_agent,
)
from keyplane.errors import KeyplaneError

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect to another site would make phishing easy.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/keys"


def _anon_page(request: Request, template: str, ctx: dict[str, object], status: int = 200) -> HTMLResponse:
    token = anon_csrf_token(request)
    page = render(request, template, {**ctx, "csrf_token": token}, status_code=status)
    return set_anon_csrf_cookie(request, page, token)


@router.get("/")
def home(request: Request) -> Response:
    try:
        info = identity_of(request).session(request.cookies.get(SESSION_COOKIE))
    except LoginRequired:
        return redirect("/login")
    return redirect("/keys" if info.full else "/login/code")


@router.get("/signup")
def signup_page(request: Request) -> HTMLResponse:
    return _anon_page(request, "signup.html", {"email": "", "active": "signup"})


@router.post("/signup")
def signup(
    request: Request,
    email: FormStr = "",
    password: FormStr = "",
    csrf_token: FormStr = "",
) -> Response:
    try:
        check_anon_csrf(request, csrf_token)
        _, token = identity_of(request).signup(email, password, ip=request_ip(request), user_agent=user_agent(request))
    except KeyplaneError as e:
        return _anon_page(request, "signup.html", {"email": email, "active": "signup", **error_context(e)}, e.status)
    return set_session_cookie(request, redirect("/security"), token)


@router.get("/login")
def login_page(request: Request, next: str = "", expired: str = "") -> HTMLResponse:
    ctx: dict[str, object] = {"email": "", "next": _safe_next(next), "active": "login"}
    if expired:
        ctx["errors"] = {"form": "Your session expired. Log in again."}
    return _anon_page(request, "login.html", ctx)


@router.post("/login")
def login(
    request: Request,
    email: FormStr = "",
    password: FormStr = "",
    csrf_token: FormStr = "",
    next: FormStr = "",
) -> Response:
    try:
        check_anon_csrf(request, csrf_token)
        result = identity_of(request).login(email, password, ip=request_ip(request), user_agent=user_agent(request))
    except KeyplaneError as e:
        ctx = {"email": email, "next": _safe_next(next), "active": "login", **error_context(e)}
        page = _anon_page(request, "login.html", ctx, e.status)
        page.headers.update(getattr(e, "headers", {}))
        return page
    target = "/login/code" if result.needs_code else _safe_next(next)
    return set_session_cookie(request, redirect(target), result.token)


def _pending(request: Request) -> tuple[str, str]:
    """The password-stage session's token and CSRF token; without one, redirects (PageRedirect)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    try:
        info = identity_of(request).session(token)
    except LoginRequired as e:
        raise PageRedirect("/login?expired=1") from e
    if info.full:
        raise PageRedirect("/keys")
    return token, info.csrf_token


@router.get("/login/code")
def login_code_page(request: Request) -> Response:
    _, expected = _pending(request)
    return render(request, "login_code.html", {"csrf_token": expected})


@router.post("/login/code")
def login_code(request: Request, totp: FormStr = "", csrf_token: FormStr = "") -> Response:
    token, expected = _pending(request)
    try:
        check_csrf(request, expected, csrf_token)
        new_token = identity_of(request).finish_login(
            token, totp, ip=request_ip(request), user_agent=user_agent(request)
        )
    except KeyplaneError as e:
        ctx = {"csrf_token": expected, **error_context(e)}
        return render(request, "login_code.html", ctx, status_code=e.status)
    return set_session_cookie(request, redirect("/keys"), new_token)


@router.post("/logout")
def logout(request: Request, csrf_token: FormStr = "") -> Response:
    token = request.cookies.get(SESSION_COOKIE, "")
    ident = identity_of(request)
    try:
        info = ident.session(token)
        check_csrf(request, info.csrf_token, csrf_token)
    except LoginRequired:
        pass  # no session to end: clear the cookie all the same
    except KeyplaneError as e:
        ctx = {"heading": "Not logged out", "message": e.message}
        return render(request, "message.html", ctx, status_code=e.status)
    else:
        ident.logout(token, ip=request_ip(request))
    return clear_session_cookie(request, redirect("/login"))


@router.get("/security")
def security_page(request: Request, user: PageUser) -> HTMLResponse:
    status = identity_of(request).twofactor.status(user.id)
    return render(request, "security.html", {"status": status, "active": "security"}, user=user)


@router.post("/security/totp/start")
def totp_start(request: Request, user: PageUser, csrf_token: FormStr = "") -> Response:
    twofactor = identity_of(request).twofactor
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        enrolment = twofactor.begin(user.id)
    except AlreadyEnrolled:
        return redirect("/security")
    except KeyplaneError as e:
        status = twofactor.status(user.id)
        return render(request, "security.html", {"status": status, **error_context(e)}, user=user, status_code=e.status)
    return render(request, "totp_enrol.html", {"enrolment": enrolment, "active": "security"}, user=user)


@router.post("/security/totp/confirm")
def totp_confirm(request: Request, user: PageUser, totp: FormStr = "", csrf_token: FormStr = "") -> Response:
    twofactor = identity_of(request).twofactor
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        codes = twofactor.confirm(user.id, totp, ip=user.ip, keep_session=user.token)
    except AlreadyEnrolled:
        return redirect("/security")
    except KeyplaneError as e:
        enrolment = twofactor.pending(user.id)
        if enrolment is None:
            return redirect("/security")
        ctx = {"enrolment": enrolment, "active": "security", **error_context(e)}
        return render(request, "totp_enrol.html", ctx, user=user, status_code=e.status)
    return render(request, "recovery_codes.html", {"codes": codes, "active": "security"}, user=user)


@router.post("/security/recovery-codes")
def recovery_codes(request: Request, user: PageUser, totp: FormStr = "", csrf_token: FormStr = "") -> Response:
    ident = identity_of(request)
    try:
        check_csrf(request, user.csrf_token, csrf_token)
        codes = ident.new_recovery_codes(user.id, totp, ip=user.ip, keep_session=user.token)
    except KeyplaneError as e:
        ctx = {"status": ident.twofactor.status(user.id), "active": "security", **error_context(e)}
        return render(request, "security.html", ctx, user=user, status_code=e.status)
    return render(request, "recovery_codes.html", {"codes": codes, "active": "security"}, user=user)
