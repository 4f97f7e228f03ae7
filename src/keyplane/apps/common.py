"""What the holder-side commands share: one-line errors, the profile store, logging with redaction.

Nothing here imports the server packages: these commands are third-party tools that talk HTTP.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from keyplane.client import redact
from keyplane.client.errors import ClientError
from keyplane.client.profile import Profile
from keyplane.client.store import ProfileStore, holder_dir

err = Console(stderr=True)
out = Console()
F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 2


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[bold red]error:[/] {redact.redact(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def handled(fn: F) -> F:
    """Turn every expected error into a one-line message and a non-zero exit (never a traceback)."""
    from keyplane.apps.bot.grid import GridError
    from keyplane.apps.tax.csvimport import CsvError
    from keyplane.apps.tax.engine import TaxError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ClientError, TaxError, CsvError, GridError) as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as e:
            import ccxt

            if isinstance(e, ccxt.BaseError):
                from keyplane.client.ccxt_errors import translate

                fail(str(translate(e)))
            raise

    return wrapper  # type: ignore[return-value]


def profile_store(keystore: Path | None = None) -> ProfileStore:
    def prompt(text: str) -> str:
        return str(typer.prompt(text.rstrip(": "), hide_input=True, err=True))

    interactive = sys.stdin.isatty()
    return ProfileStore(keystore, prompt=prompt if interactive else None)


def chosen_profiles(names: list[str] | None, keystore: Path | None = None, *, hint: str = "") -> list[Profile]:
    """The profiles named (default: every profile); fails, saying how to add one, if there are none."""
    store = profile_store(keystore)
    chosen = [store.get(n) for n in names] if names else store.all()
    if not chosen:
        fail(f"no profiles: add one with `keyplane keys add`{hint}")
    return chosen


def data_file(name: str) -> Path:
    path = holder_dir() / name
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr through the redacting filter (keys shown as their prefix, no signatures)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("urllib3", "httpx", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact.install(root)
