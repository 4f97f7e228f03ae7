"""``keyplane admin``: operator commands for users, keys and the master key."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from keyplane.accounts.stepup import StepUp
from keyplane.commands.common import emit, emit_json, fail, out_console, services
from keyplane.crypto.keyring import encode_master_key, new_master_key
from keyplane.keys.rotation import MasterKeyRotation
from keyplane.keys.rules import parse_expiry, parse_grace
from keyplane.keys.schemas import IssuedKey, KeyInfo
from keyplane.keys.scopes import scopes_text

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
    emit(as_json, user.to_json(), f"created user {user.email} (id {user.id})")


@app.command("create-key")
def create_key(
    email: str,
    scope: Annotated[list[str] | None, typer.Option("--scope", help="read, trade or withdraw; repeat.")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="An allowed IP or CIDR; repeat.")] = None,
    symbol: Annotated[list[str] | None, typer.Option("--symbol", help="An allowed symbol; repeat.")] = None,
    max_notional: Annotated[str | None, typer.Option(help="Largest order value, in the quote asset.")] = None,
    daily_withdraw_cap: Annotated[str | None, typer.Option(help="Most that may be withdrawn per day.")] = None,
    expires_in: Annotated[str | None, typer.Option(help="A duration (30d, 12h) or a date (2027-01-31).")] = None,
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
        restrictions = svc.keys.build_restrictions(
            ips=ip or [],
            symbols=symbol or [],
            max_notional=max_notional,
            daily_withdraw_cap=daily_withdraw_cap,
            expires_at=parse_expiry(expires_in),
        )
        user_id = svc.keys.user_id_for_email(email)
        issued = svc.keys.create(
            user_id,
            scopes=scope or ["read"],
            restrictions=restrictions,
            label=label,
            key_type=key_type,  # type: ignore[arg-type]
            public_key=pem,
            step_up=StepUp.operator(),
        )
    emit(as_json, issued.to_json(), lambda: _print_issued(issued))


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
    emit(as_json, info.to_json(), lambda: _print_key(info))


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
        info = svc.keys.update(
            api_key.strip(),
            scopes=scope if scope else UNSET,
            ips=[] if clear_ips else (ip if ip else UNSET),
            symbols=symbol if symbol else UNSET,
            max_notional=max_notional if max_notional is not None else UNSET,
            daily_withdraw_cap=daily_withdraw_cap if daily_withdraw_cap is not None else UNSET,
            expires_at=parse_expiry(expires_in) if expires_in else UNSET,
            label=label if label is not None else UNSET,
            step_up=StepUp.operator(),
        )
    emit(as_json, info.to_json(), lambda: _print_key(info))


def _status_command(verb: str, api_key: str, as_json: bool, **options: object) -> None:
    with services() as svc:
        info = getattr(svc.keys, verb)(api_key.strip(), **options)
    emit(as_json, info.to_json(), f"{info.api_key}: {info.effective_status}")


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
    _status_command("enable", api_key, as_json, step_up=StepUp.operator())


@app.command("revoke-all")
def revoke_all(email: str, as_json: JsonOpt = False) -> None:
    """Revoke every key of an account and end its console sessions (the panic button)."""
    from keyplane.accounts.sessions import end_sessions

    with services() as svc:
        uid = svc.keys.user_id_for_email(email)
        ids = svc.keys.revoke_all(uid, also=lambda s: end_sessions(s, uid))
    emit(as_json, {"revoked": ids, "count": len(ids)}, f"revoked {len(ids)} key(s)")


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
        grace_td = parse_grace(grace, svc.settings.rotate_grace_default_s)
        issued = svc.keys.rotate(api_key.strip(), grace=grace_td, public_key=pem, step_up=StepUp.operator())
    if as_json:
        emit_json(issued.to_json())
    else:
        _print_issued(issued)
        if issued.info.previous_valid_until:
            out_console.print(f"The old credential works until {issued.info.previous_valid_until.isoformat()}.")


@app.command("master-keys")
def master_keys(as_json: JsonOpt = False) -> None:
    """Show the master keyring: the active key, every key held, and how many secrets each seals."""
    with services() as svc:
        status = MasterKeyRotation(svc.db, svc.master).status()
    if as_json:
        emit_json(status.to_json())
        return
    table = Table("master key", "state", "ciphertexts")
    for kid in status.keys:
        table.add_row(kid, "active" if kid == status.active else "", str(status.ciphertexts.get(kid, 0)))
    out_console.print(table)


@app.command("add-master-key")
def add_master_key(as_json: JsonOpt = False) -> None:
    """Stage 1 of a rotation: add a fresh key to the master keyfile (it seals nothing yet).

    Running servers pick it up from the file when they first meet it. With KEYPLANE_MASTER_KEYS,
    add a key from `generate-master-key` to every node's environment and restart them instead.
    """
    with services() as svc:
        kid = MasterKeyRotation(svc.db, svc.master).add_key()
    emit(as_json, {"added": kid}, f"added master key {kid}; now run: keyplane admin rotate-master-key")


@app.command("rotate-master-key")
def rotate_master_key(
    to: Annotated[str | None, typer.Option("--to", help="The key id to make active; default: the newest.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage 2: make the newest key (or --to) active and re-encrypt every secret under it, in one
    transaction. The old key stays in the keyring until drop-master-key."""
    with services() as svc:
        result = MasterKeyRotation(svc.db, svc.master).rotate(to)
    if as_json:
        emit_json(result.to_json())
        return
    out_console.print(f"re-encrypted {result.reencrypted} secret(s) under master key {result.active}")
    if result.remaining:
        out_console.print(f"[yellow]{result.remaining} ciphertext(s) are still under other keys[/]")
    if result.previous != result.active:
        out_console.print(f"when no server needs it: keyplane admin drop-master-key {result.previous}")


@app.command("drop-master-key")
def drop_master_key(key_id: str, as_json: JsonOpt = False) -> None:
    """Stage 3: remove a key from the keyring, once a query proves no stored secret needs it."""
    with services() as svc:
        MasterKeyRotation(svc.db, svc.master).drop(key_id.strip())
        from_env = svc.master.keyfile is None
    if as_json:
        emit_json({"dropped": key_id.strip()})
    elif from_env:
        out_console.print(f"no secret needs master key {key_id}: remove it from KEYPLANE_MASTER_KEYS on every node")
    else:
        out_console.print(f"dropped master key {key_id}")


@app.command("generate-master-key")
def generate_master_key() -> None:
    """Print a new random master key (base64url, 32 bytes) for KEYPLANE_MASTER_KEYS.

    To rotate: append it to KEYPLANE_MASTER_KEYS (comma-separated) on every node and restart them
    one by one, then run `keyplane admin rotate-master-key` and `drop-master-key`.
    """
    print(encode_master_key(new_master_key()))


@app.command("sweep")
def sweep(as_json: JsonOpt = False) -> None:
    """Mark expired keys and warn about idle ones now (the server also does this every minute)."""
    with services() as svc:
        result = svc.keys.records.sweep()
    emit(as_json, result, f"expired {result['expired']}, warned {result['warned']}")
