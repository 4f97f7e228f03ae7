"""``/v1/account``: the console's operations as a JSON API, authenticated by the session cookie plus
the ``X-CSRF-Token`` header on every call that changes anything.

Before login, ``GET /v1/account/csrf`` hands out a double-submit token (cookie + header) for
``signup`` and ``login``. After login, the session's token comes back in each login response and
from ``GET /v1/account/session``. A request signed with an API key is refused here, whatever its
scopes: keys never manage keys.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import APIKeyCookie, APIKeyHeader
from pydantic import BaseModel, Field

from keyplane.api.console.web import (
    SESSION_COOKIE,
    ConsoleUser,
    anon_csrf_token,
    api_user,
    check_anon_csrf,
    check_csrf,
    clear_session_cookie,
    identity_of,
    key_manager,
    request_ip,
    services_of,
    set_anon_csrf_cookie,
    set_session_cookie,
    user_agent,
)
from keyplane.api.fields import (
    Amount,
    Code,
    Email,
    Items,
    KeyIdPath,
    KeyIdQuery,
    Label,
    Moment,
    Password,
    PublicKey,
    SeqQuery,
)
from keyplane.keys.activity import activity as account_activity
from keyplane.keys.manage import KeySpec, parse_expiry, parse_grace

# Declared for the OpenAPI schema; api_user does the checking.
_session_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="console session cookie")
_csrf_scheme = APIKeyHeader(name="X-CSRF-Token", auto_error=False, description="CSRF token of the session")


def _user(
    request: Request,
    _cookie: Annotated[str | None, Depends(_session_scheme)] = None,
    _csrf: Annotated[str | None, Depends(_csrf_scheme)] = None,
) -> ConsoleUser:
    return api_user(request)


User = Annotated[ConsoleUser, Depends(_user)]
router = APIRouter(prefix="/v1/account", tags=["account"])


class Credentials(BaseModel):
    email: Email
    password: Password


class CodeIn(BaseModel):
    totp: Code = Field("", description="a 6-digit TOTP code (or, at login, a recovery code)")


class KeyCreate(BaseModel):
    label: Label = ""
    scopes: Items = Field(default_factory=lambda: ["read"])
    ips: Items = Field(default_factory=list, description="IPv4/IPv6 CIDRs, at most 30")
    symbols: Items = Field(default_factory=list)
    max_notional: Amount | None = None
    daily_withdraw_cap: Amount | None = None
    expires_at: Moment | None = Field(None, description="a date (2027-01-31), ISO timestamp or duration (30d)")
    type: Annotated[str, Field(max_length=16)] = Field("hmac", description="hmac or ed25519")
    public_key: PublicKey | None = Field(None, description="the Ed25519 public key (PEM) for type ed25519")
    totp: Code = ""


class KeyPatch(BaseModel):
    label: Label | None = None
    scopes: Items | None = None
    ips: Items | None = None
    symbols: Items | None = None
    max_notional: Amount | None = None
    daily_withdraw_cap: Amount | None = None
    expires_at: Moment | None = None
    totp: Code = Field("", description="needed only when the change widens the key")


class RotateIn(BaseModel):
    grace: Moment | None = Field(None, description="how long the old credential keeps working, e.g. 24h or 0")
    public_key: PublicKey | None = None
    totp: Code = ""


class RevokeAllIn(BaseModel):
    confirm: bool = False
    totp: Code = ""


@router.get("/csrf", summary="A CSRF token for signup and login (also set as a cookie)")
def csrf(request: Request, response: Response) -> dict[str, str]:
    token = anon_csrf_token(request)
    set_anon_csrf_cookie(request, response, token)
    return {"csrf_token": token}


@router.post("/signup", status_code=201, summary="Create an account and log in")
def signup(request: Request, response: Response, body: Credentials) -> dict[str, Any]:
    check_anon_csrf(request, None)
    ident = identity_of(request)
    user, token = ident.signup(body.email, body.password, ip=request_ip(request), user_agent=user_agent(request))
    set_session_cookie(request, response, token)
    return {"user": user.to_json(), "csrf_token": ident.session(token).csrf_token, "two_factor": False}


@router.post("/login", summary="Log in with email and password")
def login(request: Request, response: Response, body: Credentials) -> dict[str, Any]:
    check_anon_csrf(request, None)
    ident = identity_of(request)
    result = ident.login(body.email, body.password, ip=request_ip(request), user_agent=user_agent(request))
    set_session_cookie(request, response, result.token)
    csrf_token = ident.session(result.token).csrf_token
    return {"user": result.user.to_json(), "needs_totp": result.needs_code, "csrf_token": csrf_token}


@router.post("/login/totp", summary="Second login step: a TOTP or recovery code")
def login_totp(request: Request, response: Response, body: CodeIn) -> dict[str, Any]:
    ident = identity_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    info = ident.session(token)
    check_csrf(request, info.csrf_token)
    new_token = ident.finish_login(token or "", body.totp, ip=request_ip(request), user_agent=user_agent(request))
    set_session_cookie(request, response, new_token)
    return {"csrf_token": ident.session(new_token).csrf_token}


@router.post("/logout", status_code=204, summary="End this session")
def logout(request: Request, user: User) -> Response:
    identity_of(request).logout(user.token, ip=user.ip)
    return clear_session_cookie(request, Response(status_code=204))


@router.get("/session", summary="Who is logged in, and the session's CSRF token")
def session(request: Request, user: User) -> dict[str, Any]:
    status = identity_of(request).twofactor.status(user.id)
    return {
        "user": {"id": user.id, "email": user.email},
        "csrf_token": user.csrf_token,
        "two_factor": status.enabled,
        "recovery_codes_left": status.recovery_codes_left,
    }


@router.post("/totp/enrol", summary="Start TOTP enrolment: the key, the otpauth URI and a QR code (SVG)")
def totp_enrol(request: Request, user: User) -> dict[str, str]:
    enrolment = identity_of(request).twofactor.begin(user.id)
    return {"secret": enrolment.secret, "uri": enrolment.uri, "qr_svg": enrolment.qr_svg}


@router.post("/totp/confirm", summary="Finish enrolment with a code; returns 10 recovery codes, once")
def totp_confirm(request: Request, user: User, body: CodeIn) -> dict[str, Any]:
    codes = identity_of(request).twofactor.confirm(user.id, body.totp, ip=user.ip, keep_session=user.token)
    return {"recovery_codes": codes}


@router.post("/recovery-codes", summary="Replace the recovery codes (needs a TOTP code)")
def new_recovery_codes(request: Request, user: User, body: CodeIn) -> dict[str, Any]:
    codes = identity_of(request).new_recovery_codes(user.id, body.totp, ip=user.ip, keep_session=user.token)
    return {"recovery_codes": codes}


@router.get("/keys", summary="Every API key of the account")
def list_keys(request: Request, user: User) -> dict[str, Any]:
    return {"keys": [k.to_json() for k in services_of(request).keys.list_keys(user.id)]}


@router.post(
    "/keys", status_code=201, summary="Create an API key (needs 2FA and a fresh TOTP code); the secret is shown once"
)
def create_key(request: Request, user: User, body: KeyCreate) -> dict[str, Any]:
    # The body's fields are KeySpec's, but for the TOTP code, ``type`` and an expiry still to parse.
    settings = body.model_dump(exclude={"totp", "type", "expires_at"})
    spec = KeySpec(**settings, key_type=body.type, expires_at=parse_expiry(body.expires_at))
    return key_manager(request).create(user.id, spec, body.totp, actor=user.actor).to_json()


@router.post("/keys/revoke-all", summary="Revoke every key of the account (confirm + TOTP)")
def revoke_all(request: Request, user: User, body: RevokeAllIn) -> dict[str, Any]:
    manager = key_manager(request)
    ids = manager.revoke_all(user.id, body.totp, confirmed=body.confirm, actor=user.actor, keep_session=user.token)
    return {"revoked": ids}


@router.get("/keys/{api_key}", summary="One API key")
def get_key(request: Request, user: User, api_key: KeyIdPath) -> dict[str, Any]:
    return services_of(request).keys.get(api_key, user.id).to_json()


@router.patch("/keys/{api_key}", summary="Change a key; widening needs a fresh TOTP code")
def patch_key(request: Request, user: User, api_key: KeyIdPath, body: KeyPatch) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"totp"})
    if "expires_at" in changes:
        changes["expires_at"] = parse_expiry(changes["expires_at"])
    for name in ("scopes", "ips", "symbols", "label"):
        if name in changes and changes[name] is None:
            changes[name] = "" if name == "label" else []
    return key_manager(request).update(user.id, api_key, body.totp, actor=user.actor, **changes).to_json()


@router.post("/keys/{api_key}/rotate", summary="New credential (shown once); the old one works for the grace")
def rotate_key(request: Request, user: User, api_key: KeyIdPath, body: RotateIn) -> dict[str, Any]:
    grace = parse_grace(body.grace, services_of(request).settings.rotate_grace_default_s)
    manager = key_manager(request)
    issued = manager.rotate(user.id, api_key, body.totp, grace=grace, public_key=body.public_key, actor=user.actor)
    return issued.to_json()


@router.post("/keys/{api_key}/disable", summary="Disable a key")
def disable_key(request: Request, user: User, api_key: KeyIdPath) -> dict[str, Any]:
    return key_manager(request).disable(user.id, api_key, actor=user.actor).to_json()


@router.post("/keys/{api_key}/enable", summary="Re-enable a disabled key (needs a TOTP code)")
def enable_key(request: Request, user: User, api_key: KeyIdPath, body: CodeIn) -> dict[str, Any]:
    return key_manager(request).enable(user.id, api_key, body.totp, actor=user.actor).to_json()


@router.post("/keys/{api_key}/revoke", summary="Revoke a key (permanent)")
def revoke_key(request: Request, user: User, api_key: KeyIdPath) -> dict[str, Any]:
    return key_manager(request).revoke(user.id, api_key, actor=user.actor).to_json()


@router.get("/activity", summary="The account's audit events, newest first")
def activity(
    request: Request,
    user: User,
    before: SeqQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    api_key: KeyIdQuery = None,
) -> dict[str, Any]:
    events = account_activity(services_of(request).db, user.id, limit=limit, before=before, key_id=api_key)
    return {"events": [e.to_json() for e in events]}
