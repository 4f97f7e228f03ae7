"""``keyplane admin``: operator commands for users, keys and the master key."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from keyplane.commands.common import emit_json, fail, out_console, services
from keyplane.keys.errors import InvalidRestriction
from keyplane.keys.master import keyfile_path
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.scopes import parse_duration, scopes_text
from keyplane.keys.secretbox import new_master_key, write_keyfile

app = typer.Typer(help="Operator commands: users, keys, master key.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _read_public_key(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text("ascii")
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read public key file {path}: {e.__class__.__name__}")


def _print_key(info: KeyInfo) -> None:
    doc = info.to_json()
    table = Table(show_header=False, box=None)
    for k, v in doc.items():
        table.add_row(k, "" if v is None else ", ".join(v) if isinstance(v, list) else str(v))
    out_console.print(table)


def _print_issued(issued: IssuedKey) -> None:
    out_console.print(f"API key: [bold]{issued.info.api_key}[/]")
    if issued.secret:
        out_console.print(f"Secret:  [bold]{issued.secret}[/]")
        out_console.print("[yellow]The secret is shown once. Store it now; it cannot be shown again.[/]")


@app.command("create-user")
def create_user(
    email: str,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user account."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with services() as svc:
        user = svc.accounts.create_user(email, password)
    if as_json:
        emit_json(user.to_json())
    else:
        out_console.print(f"created user {user.email} (id {user.id})")


@app.command("create-key")
def create_key(
    email: str,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="read, trade or withdraw; repeat.")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="An allowed IP or CIDR; repeat.")] = None,
    symbol: Annotated[list[str] | None, typer.Option("--symbol", help="An allowed symbol; repeat.")] = None,
    max_notional: Annotated[str | None, typer.Option(help="Largest order value, in the quote asset.")] = None,
    daily_withdraw_cap: Annotated[str | None, typer.Option(help="Most that may be withdrawn per day.")] = None,
    expires_in: Annotated[str | None, typer.Option(help="For example 30d, 12h.")] = None,
    label: Annotated[str, typer.Option(help="A name for the key.")] = "",
    key_type: Annotated[str, typer.Option("--type", help="hmac or ed25519.")] = "hmac",
    public_key: Annotated[Path | None, typer.Option(help="Ed25519 public key PEM file.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. The hmac secret is printed once and can never be shown again."""
    if key_type not in ("hmac", "ed25519"):
        fail(f"unknown key type {key_type!r}; choose hmac or ed25519")
    pem = _read_public_key(public_key)
    with services() as svc:
        try:
            expires_at = dt.datetime.now(dt.UTC) + parse_duration(expires_in) if expires_in else None
        except InvalidRestriction as e:
            fail(e.message)
        restrictions = svc.keys.build_restrictions(
            ips=ip or [],
            symbols=symbol or [],
            max_notional=max_notional,
            daily_withdraw_cap=daily_withdraw_cap,
            expires_at=expires_at,
        )
        user_id = svc.keys.user_id_for_email(email)
        issued = svc.keys.create(
            user_id,
            scopes=scope or ["read"],
            restrictions=restrictions,
            label=label,
            key_type=key_type,  # type: ignore[arg-type]
            public_key=pem,
        )
    if as_json:
        emit_json(issued.to_json())
    else:
        _print_issued(issued)


@app.command("list-keys")
def list_keys(email: str, as_json: JsonOpt = False) -> None:
    """List an account's keys (never their secrets)."""
    with services() as svc:
        keys = svc.keys.list_keys(svc.keys.user_id_for_email(email))
    if as_json:
        emit_json([k.to_json() for k in keys])
        return
    table = Table("API key", "label", "type", "scopes", "status", "IPs", "expires", "last used")
    for k in keys:
        table.add_row(
            k.api_key,
            k.label,
            k.key_type,
            scopes_text(k.scopes),
            k.effective_status,
            ", ".join(str(n) for n in k.restrictions.ip_allowlist) or "any",
            k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "never",
            (k.last_used_at.strftime("%Y-%m-%d %H:%M") + f" from {k.last_used_ip}") if k.last_used_at else "never",
        )
    out_console.print(table)


@app.command("show-key")
def show_key(api_key: str, as_json: JsonOpt = False) -> None:
    """Show one key."""
    with services() as svc:
        info = svc.keys.get(api_key.strip())
    if as_json:
        emit_json(info.to_json())
    else:
        _print_key(info)


@app.command("update-key")
def update_key(
    api_key: str,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="Replace the scopes; repeat.")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="Replace the IP allowlist; repeat.")] = None,
    clear_ips: Annotated[bool, typer.Option("--clear-ips", help="Remove the IP allowlist.")] = False,
    symbol: Annotated[list[str] | None, typer.Option("--symbol", help="Replace the symbol allowlist.")] = None,
    max_notional: Annotated[str | None, typer.Option()] = None,
    daily_withdraw_cap: Annotated[str | None, typer.Option()] = None,
    expires_in: Annotated[str | None, typer.Option(help="New expiry from now, e.g. 30d.")] = None,
    label: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a key's scopes or restrictions (the operator is trusted: no 2FA here)."""
    from keyplane.keys.service import UNSET

    with services() as svc:
        try:
            expires_at = dt.datetime.now(dt.UTC) + parse_duration(expires_in) if expires_in else UNSET
        except InvalidRestriction as e:
            fail(e.message)
        info = svc.keys.update(
            api_key.strip(),
            scopes=scope if scope else UNSET,
            ips=[] if clear_ips else (ip if ip else UNSET),
            symbols=symbol if symbol else UNSET,
            max_notional=max_notional if max_notional is not None else UNSET,
            daily_withdraw_cap=daily_withdraw_cap if daily_withdraw_cap is not None else UNSET,
            expires_at=expires_at,
            label=label if label is not None else UNSET,
            step_up=True,
        )
    if as_json:
        emit_json(info.to_json())
    else:
        _print_key(info)


def _status_command(verb: str, api_key: str, as_json: bool, **options: bool) -> None:
    with services() as svc:
        info = getattr(svc.keys, verb)(api_key.strip(), **options)
    if as_json:
        emit_json(info.to_json())
    else:
        out_console.print(f"{info.api_key}: {info.effective_status}")


@app.command("revoke-key")
def revoke_key(api_key: str, as_json: JsonOpt = False) -> None:
    """Revoke a key for good. Every node rejects it within a second."""
    _status_command("revoke", api_key, as_json)


@app.command("disable-key")
def disable_key(api_key: str, as_json: JsonOpt = False) -> None:
    """Disable a key until it is enabled again."""
    _status_command("disable", api_key, as_json)


@app.command("enable-key")
def enable_key(api_key: str, as_json: JsonOpt = False) -> None:
    """Enable a disabled key (the operator is trusted: no 2FA here). An expired key stays expired."""
    _status_command("enable", api_key, as_json, step_up=True)


@app.command("revoke-all")
def revoke_all(email: str, as_json: JsonOpt = False) -> None:
    """Revoke every key of an account and end its console sessions (the panic button)."""
    from keyplane.accounts.sessions import end_sessions

    with services() as svc:
        uid = svc.keys.user_id_for_email(email)
        ids = svc.keys.revoke_all(uid, also=lambda s: end_sessions(s, uid))
    if as_json:
        emit_json({"revoked": ids, "count": len(ids)})
    else:
        out_console.print(f"revoked {len(ids)} key(s)")


@app.command("rotate-key")
def rotate_key(
    api_key: str,
    grace: Annotated[str, typer.Option(help="How long the old secret keeps working, e.g. 24h; 0 ends it now.")] = "24h",
    public_key: Annotated[Path | None, typer.Option(help="The new Ed25519 public key (ed25519 keys).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Give a key a new secret, shown once. The old one works until the grace period ends."""
    pem = _read_public_key(public_key)
    with services() as svc:
        try:
            grace_td = parse_duration(grace) if grace != "0" else dt.timedelta(0)
        except InvalidRestriction as e:
            fail(e.message)
        issued = svc.keys.rotate(api_key.strip(), grace=grace_td, public_key=pem)
    if as_json:
        emit_json(issued.to_json())
    else:
        _print_issued(issued)
        if issued.info.previous_valid_until:
            out_console.print(f"The old credential works until {issued.info.previous_valid_until.isoformat()}.")


@app.command("rotate-master-key")
def rotate_master_key(as_json: JsonOpt = False) -> None:
    """Re-encrypt every stored secret under a new master key.

    Embedded mode: a new key is added to the keyfile, every secret is re-encrypted under it, and the
    old key is dropped. With KEYPLANE_MASTER_KEYS: append the new key to that list first; this then
    re-encrypts everything under the newest key, after which older keys can be removed.
    """
    with services() as svc:
        keyring = svc.master.keyring
        if svc.master.from_file:
            path = keyfile_path(svc.settings)
            keyring = keyring.with_new_key(new_master_key())
            write_keyfile(path, keyring)  # old + new: running servers can read both meanwhile
            svc.master.keyring = keyring
        count = svc.keys.reencrypt_all(keyring)
        if svc.identity is not None:  # TOTP secrets are under the same keyring
            count += svc.identity.twofactor.reencrypt(keyring)
        if svc.master.from_file:
            write_keyfile(keyfile_path(svc.settings), keyring.only_newest())
    doc = {"reencrypted": count, "master_key_id": keyring.newest_id}
    if as_json:
        emit_json(doc)
    else:
        out_console.print(f"re-encrypted {count} secret(s) under master key {keyring.newest_id}")


@app.command("generate-master-key")
def generate_master_key() -> None:
    """Print a new random master key (base64url, 32 bytes) for KEYPLANE_MASTER_KEYS.

    To rotate: append it to KEYPLANE_MASTER_KEYS (comma-separated, oldest first) on every node,
    restart them, then run `keyplane admin rotate-master-key`.
    """
    from keyplane.keys.secretbox import encode_master_key

    print(encode_master_key(new_master_key()))


@app.command("sweep")
def sweep(as_json: JsonOpt = False) -> None:
    """Mark expired keys and warn about idle ones now (the server also does this every minute)."""
    with services() as svc:
        result = svc.keys.sweep()
    if as_json:
        emit_json(result)
    else:
        out_console.print(f"expired {result['expired']}, warned {result['warned']}")
