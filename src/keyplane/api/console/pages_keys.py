"""Console pages for API keys: list, create (secret shown once), show/edit, rotate, disable/enable,
revoke, revoke all, and the account's activity."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from keyplane.api.console.web import (
    ConsoleUser,
    PageRedirect,
    PageUser,
    check_csrf,
    error_context,
    identity_of,
    key_manager,
    redirect,
    render,
    services_of,
)
from keyplane.api.fields import KeyIdPath, KeyIdQuery, SeqQuery, checked_text
from keyplane.errors import KeyplaneError
from keyplane.keys.activity import activity
from keyplane.keys.errors import KeyNotFound
from keyplane.keys.manage import KeySpec, parse_expiry, parse_grace, spec_changes
from keyplane.keys.pubkeys import OPENSSL_HINT
from keyplane.keys.schemas import KeyInfo

router = APIRouter(include_in_schema=False)

_EVENT_TEXT = {
    "account:user:created": "Account created",
    "account:login:succeeded": "Logged in",
    "account:login:failed": "Failed log-in (wrong password)",
    "account:session:ended": "Logged out",
    "account:totp:enrolled": "Two-factor authentication turned on",
    "account:totp:failed": "Wrong authentication code",
    "account:recovery_code:used": "Recovery code used",
    "account:recovery_code:regenerated": "New recovery codes made",
    "key:api_key:created": "Key created",
    "key:api_key:updated": "Key changed",
    "key:api_key:rotated": "Key rotated",
    "key:api_key:disabled": "Key disabled",
    "key:api_key:enabled": "Key enabled",
    "key:api_key:revoked": "Key revoked",
    "key:api_key:revoked_all": "All keys revoked",
    "key:api_key:expired": "Key expired",
    "key:api_key:idle_warning": "Key idle: expires soon",
    "auth:request:failed": "Rejected signed request",
}


def describe(event_type: str) -> str:
    return _EVENT_TEXT.get(event_type, event_type)


def _lines(text: str) -> list[str]:
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


async def _form(request: Request) -> dict[str, Any]:
    """The posted form's text fields, with ``scopes`` (checkboxes) as a list."""
    form = await request.form()
    values: dict[str, Any] = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    values["scopes"] = [str(v) for v in form.getlist("scopes")]
    return values


Posted = Annotated[dict[str, Any], Depends(_form)]


def spec_from_form(values: dict[str, Any]) -> KeySpec:
    """Raises InvalidInput for a field with control characters or over its length, and
    InvalidRestriction for an expiry that does not parse."""
    checked = {
        name: checked_text(str(values.get(name, "")), name, limit, multiline=name in _MULTILINE)
        for name, limit in _FORM_LIMITS.items()
    }
    scopes = [checked_text(v, "scopes", 16) for v in values.get("scopes", [])]
    return KeySpec(
        label=checked["label"],
        scopes=scopes,
        ips=_lines(checked["ips"]),
        symbols=_lines(checked["symbols"]),
        max_notional=checked["max_notional"] or None,
        daily_withdraw_cap=checked["daily_withdraw_cap"] or None,
        expires_at=parse_expiry(checked["expires_at"]),
        key_type=checked["key_type"] or "hmac",
        public_key=checked["public_key"] or None,
    )


# Each text field of the key form and its longest value (the label's column holds 100).
_FORM_LIMITS = {
    "label": 100, "ips": 20_000, "symbols": 5_000, "max_notional": 64, "daily_withdraw_cap": 64,
    "expires_at": 64, "key_type": 16, "public_key": 4096,
}  # fmt: skip
_MULTILINE = frozenset({"ips", "symbols", "public_key"})


def values_of(key: KeyInfo) -> dict[str, Any]:
    j = key.to_json()
    explicit = key.restrictions.expires_at
    return {
        "label": key.label,
        "scopes": j["scopes"],
        "ips": "\n".join(j["ip_allowlist"]),
        "symbols": ", ".join(j["symbols"]),
        "max_notional": j["max_notional"] or "",
        "daily_withdraw_cap": j["daily_withdraw_cap"] or "",
        "expires_at": explicit.date().isoformat() if explicit else "",
    }


def _owned(request: Request, user: ConsoleUser, api_key: str) -> KeyInfo:
    """``user``'s key ``api_key``; a key of no one or of someone else redirects to the key list."""
    try:
        return services_of(request).keys.get(api_key, user.id)
    except KeyNotFound as e:
        raise PageRedirect("/keys") from e


def _detail(request: Request, user: ConsoleUser, key: KeyInfo, *, status: int = 200, **extra: Any) -> HTMLResponse:
    ctx = {"key": key, "v": values_of(key), "errors": {}, "rerrors": {}, "eerrors": {}, "active": "keys", **extra}
    return render(request, "key_detail.html", ctx, user=user, status_code=status)


@router.get("/keys")
def keys_page(request: Request, user: PageUser) -> HTMLResponse:
    keys = services_of(request).keys.list_keys(user.id)
    twofactor = identity_of(request).twofactor.enabled(user.id)
    return render(request, "keys.html", {"keys": keys, "twofactor": twofactor, "active": "keys"}, user=user)


@router.get("/keys/new")
def new_key_page(request: Request, user: PageUser) -> Response:
    if not identity_of(request).twofactor.enabled(user.id):
        return redirect("/security")
    ctx = {"v": {"scopes": ["read"], "key_type": "hmac"}, "openssl_hint": OPENSSL_HINT, "active": "keys"}
    return render(request, "key_new.html", ctx, user=user)


@router.post("/keys/new")
def create_key(request: Request, user: PageUser, values: Posted) -> Response:
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        spec = spec_from_form(values)
        issued = key_manager(request).create(user.id, spec, values.get("totp", ""), actor=user.actor)
    except KeyplaneError as e:
        values.pop("csrf_token", None)
        ctx = {"v": values, "openssl_hint": OPENSSL_HINT, "active": "keys", **error_context(e)}
        return render(request, "key_new.html", ctx, user=user, status_code=e.status)
    # The secret is in this response only: never in the session, a cookie or a redirect URL.
    ctx = {"issued": issued, "heading": "Your new API key", "active": "keys"}
    return render(request, "key_secret.html", ctx, user=user, status_code=201)


@router.get("/keys/revoke-all")
def revoke_all_page(request: Request, user: PageUser) -> HTMLResponse:
    count = sum(1 for k in services_of(request).keys.list_keys(user.id) if k.status != "revoked")
    return render(request, "revoke_all.html", {"count": count, "revoked": None, "active": "keys"}, user=user)


@router.post("/keys/revoke-all")
def revoke_all(request: Request, user: PageUser, values: Posted) -> HTMLResponse:
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        ids = key_manager(request).revoke_all(
            user.id,
            values.get("totp", ""),
            confirmed=values.get("confirm") == "yes",
            actor=user.actor,
            keep_session=user.token,
        )
    except KeyplaneError as e:
        count = sum(1 for k in services_of(request).keys.list_keys(user.id) if k.status != "revoked")
        ctx = {"count": count, "revoked": None, "active": "keys", **error_context(e)}
        return render(request, "revoke_all.html", ctx, user=user, status_code=e.status)
    return render(request, "revoke_all.html", {"count": 0, "revoked": len(ids), "active": "keys"}, user=user)


@router.get("/keys/{api_key}")
def key_page(request: Request, api_key: KeyIdPath, user: PageUser) -> HTMLResponse:
    try:
        key = services_of(request).keys.get(api_key, user.id)
    except KeyplaneError as e:
        ctx = {"heading": "No such key", "message": e.message, "back": "/keys"}
        return render(request, "message.html", ctx, user=user, status_code=e.status)
    return _detail(request, user, key)


@router.post("/keys/{api_key}/edit")
def edit_key(request: Request, api_key: KeyIdPath, user: PageUser, values: Posted) -> Response:
    actions = key_manager(request)
    key = _owned(request, user, api_key)
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        spec = spec_from_form(values)
        actions.update(user.id, api_key, values.get("totp", ""), actor=user.actor, **spec_changes(spec))
    except KeyplaneError as e:
        values.pop("csrf_token", None)
        return _detail(request, user, key, status=e.status, v=values, **error_context(e))
    return redirect(f"/keys/{api_key}?saved=1")


@router.post("/keys/{api_key}/rotate")
def rotate_key(request: Request, api_key: KeyIdPath, user: PageUser, values: Posted) -> Response:
    svc = services_of(request)
    key = _owned(request, user, api_key)
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        grace = parse_grace(checked_text(values.get("grace", ""), "grace", 64), svc.settings.rotate_grace_default_s)
        issued = key_manager(request).rotate(
            user.id,
            api_key,
            values.get("rotate_totp", ""),
            grace=grace,
            public_key=checked_text(values.get("public_key", ""), "public_key", 4096, multiline=True) or None,
            actor=user.actor,
        )
    except KeyplaneError as e:
        ctx = error_context(e, totp_field="rotate_totp")
        return _detail(request, user, key, status=e.status, rerrors=ctx["errors"])
    until = issued.info.previous_valid_until
    ctx = {
        "issued": issued,
        "heading": "Key rotated: your new credential",
        "grace_until": until.strftime("%Y-%m-%d %H:%M") if until else None,
        "active": "keys",
    }
    return render(request, "key_secret.html", ctx, user=user)


@router.post("/keys/{api_key}/disable")
def disable_key(request: Request, api_key: KeyIdPath, user: PageUser, values: Posted) -> Response:
    key = _owned(request, user, api_key)
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        key_manager(request).disable(user.id, api_key, actor=user.actor)
    except KeyplaneError as e:
        return _detail(request, user, key, status=e.status, **error_context(e))
    return redirect(f"/keys/{api_key}")


@router.post("/keys/{api_key}/enable")
def enable_key(request: Request, api_key: KeyIdPath, user: PageUser, values: Posted) -> Response:
    key = _owned(request, user, api_key)
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        key_manager(request).enable(user.id, api_key, values.get("enable_totp", ""), actor=user.actor)
    except KeyplaneError as e:
        ctx = error_context(e, totp_field="enable_totp")
        return _detail(request, user, key, status=e.status, eerrors=ctx["errors"])
    return redirect(f"/keys/{api_key}")


@router.get("/keys/{api_key}/revoke")
def revoke_page(request: Request, api_key: KeyIdPath, user: PageUser) -> Response:
    return render(request, "key_revoke.html", {"key": _owned(request, user, api_key), "active": "keys"}, user=user)


@router.post("/keys/{api_key}/revoke")
def revoke_key(request: Request, api_key: KeyIdPath, user: PageUser, values: Posted) -> Response:
    key = _owned(request, user, api_key)
    try:
        check_csrf(request, user.csrf_token, values.get("csrf_token", ""))
        key_manager(request).revoke(user.id, api_key, actor=user.actor)
    except KeyplaneError as e:
        ctx = {"key": key, "active": "keys", **error_context(e)}
        return render(request, "key_revoke.html", ctx, user=user, status_code=e.status)
    return redirect(f"/keys/{api_key}")


@router.get("/activity")
def activity_page(request: Request, user: PageUser, before: SeqQuery = None, key: KeyIdQuery = None) -> HTMLResponse:
    events = activity(services_of(request).db, user.id, limit=100, before=before, key_id=key or None)
    older = events[-1].seq if len(events) >= 100 else None
    ctx = {"events": events, "describe": describe, "older": older, "key_filter": key or "", "active": "activity"}
    return render(request, "activity.html", ctx, user=user)
