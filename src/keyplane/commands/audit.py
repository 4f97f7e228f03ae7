"""``keyplane audit``: check the hash chain, and export the log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from keyplane.audit import export as audit_export
from keyplane.audit.verify import verify_chain
from keyplane.commands.common import emit_json, err_console, fail, out_console, services

app = typer.Typer(help="The audit log: verify its hash chain, export it.", no_args_is_help=True)

# Exit status of ``verify`` when the chain is broken (2 is a usage or start-up error).
TAMPERED = 1


@app.command("verify")
def verify(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Walk the whole chain. Exit 1 and name the first bad event if any event was edited, deleted
    or reordered."""
    with services() as svc:
        report = verify_chain(svc.db)
    if as_json:
        problem = report.problem
        emit_json(
            {
                "ok": report.ok,
                "events": report.events,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "first_bad_seq": None if problem is None else problem.seq,
                "problem": None if problem is None else problem.kind,
                "detail": None if problem is None else problem.detail,
            }
        )
    elif report.problem is None:
        out_console.print(
            f"audit chain OK: {report.events} events, head {report.head_seq} {report.head_hash}", soft_wrap=True
        )
    else:
        err_console.print(
            f"[bold red]audit chain BROKEN[/] at event {report.problem.seq} ({report.problem.kind}): "
            f"{report.problem.detail}",
            highlight=False,
            soft_wrap=True,
        )
        err_console.print(
            f"events up to {report.head_seq} verify (hash {report.head_hash})", highlight=False, soft_wrap=True
        )
    if not report.ok:
        raise typer.Exit(TAMPERED)


@app.command("export")
def export(
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after this ISO date/time (UTC).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export the audit log, oldest first, with each event's hash and prev_hash."""
    if fmt not in ("jsonl", "csv"):
        fail(f"--format must be jsonl or csv, not {fmt!r}")
    try:
        since_dt = audit_export.parse_since(since)
    except ValueError as e:
        fail(str(e))
    with services() as svc:
        if out is None:
            audit_export.write(svc.db, sys.stdout, fmt, since_dt)  # type: ignore[arg-type]
            return
        try:
            with out.open("w", encoding="utf-8", newline="") as handle:
                count = audit_export.write(svc.db, handle, fmt, since_dt)  # type: ignore[arg-type]
        except OSError as e:
            fail(f"cannot write {out}: {e.strerror}")
    err_console.print(f"wrote {count} events to {out}", highlight=False)
