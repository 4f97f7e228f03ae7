"""What every command shares: one-line errors, JSON output, reading the settings once."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from keyplane.errors import KeyplaneError
from keyplane.services import Services, build_services
from keyplane.settings import Settings, get_settings

err_console = Console(stderr=True)
out_console = Console()
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    # soft_wrap: one line however narrow the terminal (or the log it is written to).
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as e:
        first = e.errors()[0]
        name = "KEYPLANE_" + "_".join(str(p) for p in first["loc"]).upper()
        fail(f"{name}: {first['msg']}")


@contextmanager
def services() -> Iterator[Services]:
    """Build the services, turning keyplane errors into one-line messages and exit code 2."""
    svc = None
    try:
        svc = build_services(load_settings())
        yield svc
    except KeyplaneError as e:
        fail(e.message)
    finally:
        if svc is not None:
            svc.close()


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def emit(as_json: bool, doc: Any, text: str | Callable[[], None]) -> None:
    """Print ``doc`` as JSON for scripts, or else ``text``: a line, or a function that prints."""
    if as_json:
        emit_json(doc)
    elif callable(text):
        text()
    else:
        out_console.print(text)
