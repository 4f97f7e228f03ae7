"""The packages form layers: every module imports, and every import points down (or stays in its
own package). The rules from the design, one test each:

- ``crypto``, ``settings`` and ``db`` are the bottom: they import no package above them;
- ``audit`` imports no domain;
- ``accounts`` sits below ``keys``;
- ``auth`` sits below ``api``;
- ``client`` and ``apps`` import nothing from the server half (``client/test_boundary.py`` also
  checks what importing them loads at run time);
- there is no cycle between packages.

Imports are read from the source (module level and inside functions alike), so a late import
inside a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections import defaultdict
from pathlib import Path

import pytest

import keyplane

SRC = Path(keyplane.__file__).parent

# Lower numbers are lower layers; a package may import its own layer's utilities (0) and anything
# below its own number. ``migrations`` is the schema history that ``db`` applies: one unit with it.
LAYER = {
    "errors": 0,
    "parsing": 0,
    "crypto": 0,
    "settings": 0,
    "db": 1,
    "masterkeys": 2,
    "audit": 2,
    "accounts": 3,
    "keys": 4,
    "auth": 5,
    "exchange": 5,
    "services": 6,
    "streams": 6,
    "api": 7,
    "commands": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 0,
}
HOLDER = {"client": 0, "apps": 1}
BOTTOM = {"errors", "parsing", "crypto", "settings", "db"}
DOMAINS = {"accounts", "keys", "auth", "exchange", "api", "services", "commands", "cli", "masterkeys"}
SERVER = set(LAYER) - {"__init__"}

# Imports that break a rule today, each with the rule it breaks. Each has its own test below, which
# fails as soon as the import comes back after it is gone.
KNOWN: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _component(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return "db" if name == "migrations" else name  # the schema history db applies: one unit with it


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.split(".")[0] == "keyplane" and len(n.split(".")) > 1}


def _graph() -> dict[tuple[str, str], set[str]]:
    """(importing package, imported package) -> the modules that make that import."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        module = _module_name(path)
        here = _component(module)
        for name in _imported(ast.parse(path.read_text("utf-8"))):
            there = _component(name)
            if there != here and ((SRC / there).is_dir() or (SRC / f"{there}.py").is_file()):
                edges[(here, there)].add(module)
    return edges


EDGES = _graph()


def _violations(rule: str) -> list[str]:
    out = []
    for (here, there), modules in sorted(EDGES.items()):
        if rule == "bottom" and here in BOTTOM and there not in BOTTOM:
            out.append(f"{here} -> {there} ({', '.join(sorted(modules))})")
        if rule == "audit" and here == "audit" and there in DOMAINS:
            out.append(f"audit -> {there} ({', '.join(sorted(modules))})")
        if rule == "accounts" and here == "accounts" and there == "keys":
            out.append(f"accounts -> keys ({', '.join(sorted(modules))})")
        if rule == "auth" and here == "auth" and there == "api":
            out.append(f"auth -> api ({', '.join(sorted(modules))})")
        if rule == "holder" and here in HOLDER and there in SERVER:
            out.append(f"{here} -> {there} ({', '.join(sorted(modules))})")
    return out


def _all_modules() -> list[str]:
    names = ["keyplane"]
    names += [m.name for m in pkgutil.walk_packages(keyplane.__path__, "keyplane.")]
    # Not imported: the alembic revisions and env (alembic runs them), and __main__ (it runs the CLI).
    skip = ("keyplane.migrations.versions.", "keyplane.migrations.env", "keyplane.__main__")
    return sorted(n for n in names if not n.startswith(skip))


def test_every_package_has_a_layer() -> None:
    components = {_component(_module_name(p)) for p in SRC.rglob("*.py")}
    assert components - set(LAYER) - set(HOLDER) == set(), "give every new package a layer in LAYER"


@pytest.mark.parametrize("module", _all_modules())
def test_every_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_crypto_settings_and_db_are_the_bottom() -> None:
    bad = [v for v in _violations("bottom") if not v.startswith("db -> exchange (keyplane.migrations.")]
    assert bad == []
    assert not any(here == "crypto" for here, _ in EDGES), "crypto/ imports no other keyplane package"


def test_migrations_are_frozen_ddl() -> None:
    # A migration spells out its DDL: built from the live models, a later model change would
    # silently rewrite an old revision.
    assert ("db", "exchange") not in EDGES


def test_audit_imports_no_domain() -> None:
    assert _violations("audit") == []


def test_accounts_sits_below_keys() -> None:
    assert _violations("accounts") == []


def test_auth_sits_below_api() -> None:
    assert _violations("auth") == []


def test_client_and_apps_import_nothing_from_the_server() -> None:
    assert _violations("holder") == []


def _points_down(here: str, there: str) -> bool:
    if here in HOLDER:
        return there in HOLDER and HOLDER[there] < HOLDER[here]
    if there in HOLDER:
        return here in ("commands", "cli")  # the one `keyplane` command also runs the holder tools
    if LAYER[here] == LAYER[there] == 0:
        return there in ("errors", "parsing")  # the two bottom utilities that import nothing
    return LAYER[there] < LAYER[here]


def test_every_import_points_down() -> None:
    bad = [
        f"{here} -> {there}: {', '.join(sorted(modules))}"
        for (here, there), modules in sorted(EDGES.items())
        if (here, there) not in KNOWN and not _points_down(here, there)
    ]
    assert bad == []


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for here, there in EDGES:
        if (here, there) not in KNOWN:
            graph[here].add(there)
    # Tarjan's strongly connected components: a component of two or more packages is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert cycles == []
