"""Each wire code belongs to exactly one error class: a client (or a newcomer) that meets a code
finds the one class that raises it. A subclass that inherits a code without setting its own is
that class's case, not a second owner. Every module is imported first, so every class counts."""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict

import keyplane
from keyplane.errors import KeyplaneError

_SKIP = ("keyplane.migrations.versions.", "keyplane.migrations.env", "keyplane.__main__")


def _every_subclass(cls: type) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _every_subclass(sub)
    return out


def test_every_wire_code_has_one_owner() -> None:
    for info in pkgutil.walk_packages(keyplane.__path__, "keyplane."):
        if not info.name.startswith(_SKIP):
            importlib.import_module(info.name)
    owners: dict[str, list[str]] = defaultdict(list)
    for cls in _every_subclass(KeyplaneError) | {KeyplaneError}:
        if cls.__module__.startswith("keyplane.") and "code" in vars(cls):
            owners[vars(cls)["code"]].append(f"{cls.__module__}.{cls.__qualname__}")
    shared = {code: sorted(names) for code, names in owners.items() if len(names) > 1}
    assert shared == {}
    assert len(owners) > 40  # the walk found the error trees of every package
