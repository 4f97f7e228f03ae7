"""The holder side is a third-party program: no client or app module may import a server package."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import keyplane.apps
import keyplane.client

SERVER = ("keys", "auth", "accounts", "exchange", "audit", "api", "db", "services", "settings", "commands", "errors")


def modules() -> list[str]:
    found = []
    for pkg in (keyplane.client, keyplane.apps):
        found.append(pkg.__name__)
        found += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return sorted(found)


def test_every_module_is_covered() -> None:
    names = modules()
    assert {"keyplane.client.keystore", "keyplane.client.sdk", "keyplane.apps.cli", "keyplane.apps.tax.engine"} <= set(
        names
    )


@pytest.mark.parametrize("module", modules())
def test_imports_no_server_package(module: str) -> None:
    code = f"import importlib, sys, json\nimportlib.import_module({module!r})\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    import json

    loaded = json.loads(out)
    bad = [m for m in loaded if m.split(".")[0] == "keyplane" and len(m.split(".")) > 1 and m.split(".")[1] in SERVER]
    assert bad == [], f"{module} pulls in server modules: {bad}"
