"""``keyplane keys``: the encrypted keystore (add, list, remove, change-passphrase, doctor)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from keyplane.apps.common import chosen_profiles, err, fail, handled, out, profile_store, warn
from keyplane.client import keyformat
from keyplane.client.ccxt_errors import translate
from keyplane.client.ccxt_factory import ccxt_exchange
from keyplane.client.errors import ClientError
from keyplane.client.keystore import Keystore
from keyplane.client.profile import Profile, Secret, check_name
from keyplane.client.store import ProfileStore, remember_passphrase

app = typer.Typer(help="Keep exchange API keys in an encrypted keystore.", no_args_is_help=True)
NEW_PASSPHRASE_ENV = "KEYPLANE_NEW_KEYSTORE_PASSPHRASE"
KeystoreOpt = typer.Option(None, "--keystore", envvar="KEYPLANE_KEYSTORE", help="Keystore file.")


def _new_passphrase(what: str) -> str:
    if os.environ.get(NEW_PASSPHRASE_ENV):
        return os.environ[NEW_PASSPHRASE_ENV]
    value = str(typer.prompt(what, hide_input=True, confirmation_prompt=True, err=True))
    if len(value) < 8:
        fail("the passphrase must be at least 8 characters")
    return value


def _open_for_write(store: ProfileStore) -> Keystore:
    if store.exists():
        return store.keystore()
    if not os.environ.get("KEYPLANE_KEYSTORE_PASSPHRASE"):
        store._passphrase = _new_passphrase(f"New passphrase for {store.path}")
    return store.keystore(create=True)


@app.command("add")
@handled
def add(
    profile: str = typer.Argument(..., help="Profile name (lower case)."),
    exchange: str = typer.Option("keyplane", help="keyplane, binance, or any ccxt exchange id."),
    base_url: str | None = typer.Option(None, help="The keyplane server (keyplane profiles only)."),
    private_key_file: Path | None = typer.Option(None, help="Ed25519 private key PEM, instead of a secret."),
    label: str = typer.Option("", help="A note for yourself."),
    remember: bool = typer.Option(False, help="Store the keystore passphrase in the OS keyring."),
    keystore: Path | None = KeystoreOpt,
) -> None:
    """Add (or replace) a profile. Prompts for the API key and secret; they are never echoed."""
    import ccxt

    check_name(profile)
    exchange = exchange.lower()
    if exchange != "keyplane" and exchange not in ccxt.exchanges:
        fail(f"unknown exchange {exchange!r}: use keyplane or a ccxt exchange id")
    if base_url and exchange != "keyplane":
        fail("--base-url only applies to keyplane profiles")
    pem = None
    if private_key_file is not None:  # read before any prompt: a wrong path fails at once
        try:
            pem = private_key_file.read_text()
        except OSError as e:
            fail(f"cannot read {private_key_file}: {e.strerror}")
        if "PRIVATE KEY" not in pem:
            fail(f"{private_key_file} is not a PEM private key")
    store = profile_store(keystore)
    ks = _open_for_write(store)
    api_key = str(typer.prompt("API key", hide_input=True, err=True)).strip()
    check_credential("api_key", api_key, exchange)
    creds: dict[str, Secret] = {"api_key": Secret(api_key)}
    if pem is not None:
        creds["private_key_pem"] = Secret(pem)
    else:
        secret = str(typer.prompt("Secret", hide_input=True, err=True)).strip()
        check_credential("secret", secret, exchange)
        creds["secret"] = Secret(secret)
    meta: dict[str, Any] = {"added_at": int(time.time() * 1000)}
    if label:
        meta["label"] = label
    ks.put(Profile(name=profile, exchange=exchange, base_url=base_url, meta=meta, **creds))  # type: ignore[arg-type]
    ks.save()
    if remember and not remember_passphrase(store.path, store.passphrase()):
        warn("no OS keyring is available; the passphrase was not stored")
    out.print(f"stored profile [bold]{profile}[/] ({exchange}) in {store.path}")


def check_credential(kind: str, value: str, exchange: str) -> None:
    """Refuse, before anything is stored, an empty value, and a keyplane key or secret that is not
    well formed (a typo, a cut-short paste, key and secret swapped). A keyplane profile takes only
    keyplane credentials; another exchange's key is checked only if it looks like a keyplane one."""
    what = "API key" if kind == "api_key" else "secret"
    if not value:
        fail(f"no {what} given; nothing was stored")
    if exchange == "keyplane" or keyformat.looks_like_keyplane(value):
        try:
            if kind == "api_key":
                keyformat.check_api_key(value)
            else:
                keyformat.check_secret(value)
        except keyformat.BadCredential as e:
            fail(f"{e}; nothing was stored")


@app.command("list")
@handled
def list_(keystore: Path | None = KeystoreOpt) -> None:
    """List profiles (keystore and environment) with their secrets masked."""
    store = profile_store(keystore)
    table = Table("profile", "exchange", "server", "key", "type", "source", "label")
    for p in store.all():
        ktype = "ed25519" if p.private_key_pem else "hmac"
        table.add_row(p.name, p.exchange, p.base_url or "", p.key_hint, ktype, p.source, str(p.meta.get("label", "")))
    out.print(table)


@app.command("remove")
@handled
def remove(profile: str, keystore: Path | None = KeystoreOpt) -> None:
    """Remove a profile from the keystore."""
    store = profile_store(keystore)
    if profile in store.env:
        fail(f"profile {profile!r} comes from the environment; unset its KEYPLANE_PROFILE_* variables")
    ks = store.keystore()
    ks.remove(profile)
    ks.save()
    out.print(f"removed profile [bold]{profile}[/]")


@app.command("change-passphrase")
@handled
def change_passphrase(
    remember: bool = typer.Option(False, help="Store the new passphrase in the OS keyring."),
    keystore: Path | None = KeystoreOpt,
) -> None:
    """Re-encrypt every record under a new passphrase (atomically: old file or new, never a mix)."""
    store = profile_store(keystore)
    ks = store.keystore()
    new = _new_passphrase("New passphrase")
    ks.change_passphrase(new)
    if remember and not remember_passphrase(store.path, new):
        warn("no OS keyring is available; the passphrase was not stored")
    out.print(f"re-encrypted {len(ks.profiles)} profile(s) in {store.path}")


def _ms_date(ms: Any) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%Y-%m-%d") if ms else "-"


def inspect(profile: Profile) -> tuple[dict[str, Any] | None, list[str]]:
    """(restrictions, warnings) for one profile; restrictions is None where the exchange has no
    such endpoint. Raises ``ClientError`` when the exchange cannot be asked."""
    if profile.exchange not in ("keyplane", "binance"):
        return None, [f"{profile.exchange} has no key-permission endpoint in ccxt: check the key's permissions there"]
    ex = ccxt_exchange(profile)
    try:
        r: dict[str, Any] = ex.sapi_get_account_apirestrictions()
    except Exception as e:
        raise translate(e, ex) from None
    warnings = []
    now = time.time() * 1000
    if r.get("enableWithdrawals"):
        warnings.append("withdraw is enabled: no tracker, tax tool or bot needs it")
    if not r.get("ipRestrict"):
        warnings.append("no IP allowlist: restrict the key to the IPs you use it from")
    expiry = r.get("tradingAuthorityExpirationTime") or r.get("expiresAt")
    if expiry and int(expiry) <= now:
        warnings.append(f"the key expired on {_ms_date(expiry)}")
    elif expiry and int(expiry) - now < 14 * 86_400_000:
        warnings.append(f"the key expires on {_ms_date(expiry)}: rotate it soon")
    created = r.get("createTime")
    if created and now - int(created) > 90 * 86_400_000:
        warnings.append(f"the key is older than 90 days (created {_ms_date(created)}): rotate it")
    return r, warnings


def least_privilege(r: dict[str, Any]) -> str:
    can_trade, can_withdraw = r.get("enableSpotAndMarginTrading"), r.get("enableWithdrawals")
    if can_withdraw:
        return "make a read key for trackers/tax and a trade key for bots; drop withdraw"
    if can_trade:
        return "fit for a bot; use a separate read-only key for portfolio and tax"
    return "read-only: fit for portfolio and tax, not for a bot"


@app.command("doctor")
@handled
def doctor(
    profiles: list[str] = typer.Argument(None, help="Profiles to check (default: all)."),
    keystore: Path | None = KeystoreOpt,
) -> None:
    """Ask each exchange what each key can do, and warn about risky settings."""
    chosen = chosen_profiles(profiles, keystore)
    table = Table("profile", "read", "trade", "withdraw", "IP allowlist", "expires", "created", "use it for")
    problems = 0
    for p in chosen:
        try:
            r, warnings = inspect(p)
        except ClientError as e:
            problems += 1
            err.print(f"[red]{p.name}:[/] {e}", highlight=False)
            continue
        if r is None:
            table.add_row(p.name, "?", "?", "?", "?", "-", "-", "check on the exchange")
        else:
            yes = {True: "yes", False: "no", None: "?"}
            ips = ", ".join(r.get("ipAllowlist") or []) or ("yes" if r.get("ipRestrict") else "none")
            table.add_row(
                p.name,
                yes[r.get("enableReading")],
                yes[r.get("enableSpotAndMarginTrading")],
                yes[r.get("enableWithdrawals")],
                ips,
                _ms_date(r.get("tradingAuthorityExpirationTime") or r.get("expiresAt")),
                _ms_date(r.get("createTime")),
                least_privilege(r),
            )
        for w in warnings:
            warn(f"{p.name}: {w}")
    out.print(table)
    if problems:
        raise typer.Exit(1)
