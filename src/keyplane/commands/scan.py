"""``keyplane scan``: find keyplane credentials in files, and act on them.

    keyplane scan PATH...            report well-formed keys and secrets (offline; exit 1 if any)
    keyplane scan PATH... --check    also say whose key each one is on this server
    keyplane scan PATH... --revoke   and revoke those keys, recording where they leaked

Use ``-`` (or no path) for standard input. Output never shows a secret: keys are masked to their prefix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from keyplane.commands.common import emit_json, out_console, services
from keyplane.keys.format import Credential, find_credentials

_SKIP_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".ruff_cache"}
_MAX_FILE_BYTES = 5 * 1024 * 1024


def _files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
                for name in sorted(names):
                    yield Path(root) / name
        else:
            yield path


def _scan_text(text: str, where: str) -> Iterator[tuple[Credential, str]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        for cred in find_credentials(line):
            yield cred, f"{where}:{lineno}"


def scan(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or directories; '-' or none for stdin.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Look each credential up on this server.")] = False,
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke the keys found (implies --check).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Find keyplane API keys and secrets in files. Exit code 1 when any is found, 0 when none."""
    found: list[tuple[Credential, str]] = []
    targets = paths or [Path("-")]
    for target in targets:
        if str(target) == "-":
            found.extend(_scan_text(sys.stdin.read(), "<stdin>"))
            continue
        if not target.exists():
            out_console.print(f"[red]error:[/] {target} does not exist", highlight=False)
            raise typer.Exit(2)
        for file in _files([target]):
            try:
                if file.stat().st_size > _MAX_FILE_BYTES:
                    continue
                raw = file.read_bytes()
            except OSError:
                continue
            if b"\0" in raw[:8192]:
                continue  # binary
            found.extend(_scan_text(raw.decode("utf-8", "replace"), str(file)))

    from keyplane.keys import leaks as leaklib
    from keyplane.keys.format import mask

    if check or revoke:
        with services() as svc:
            results = leaklib.match(svc.keys, found)
            revoked = leaklib.revoke(svc.keys, results) if revoke else []
    else:
        results = [leaklib.Leak(kind=c.kind, masked=mask(c.value), where=w) for c, w in found]
        revoked = []

    if as_json:
        emit_json({"found": [r.to_json() for r in results], "revoked": revoked})
    elif results:
        table = Table("where", "kind", "credential", "key", "owner", "status")
        for r in results:
            table.add_row(r.where, r.kind, r.masked, r.api_key or "", r.owner or "", r.status or "")
        out_console.print(table)
        if revoked:
            out_console.print(f"revoked {len(revoked)} key(s)")
    else:
        out_console.print("no keyplane credentials found")
    raise typer.Exit(1 if results else 0)
