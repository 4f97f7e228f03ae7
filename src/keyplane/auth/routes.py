"""Which routes need a signed request, in which dialect, and with which scope.

A route declares it with ``@signed(Scope.TRADE)`` under its router decorator. The middleware reads
the table once at start-up; unsigned routes pay one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from starlette.routing import BaseRoute, Match, Route

from keyplane.keys.scopes import Scope

Dialect = Literal["binance", "httpsig"]
F = TypeVar("F", bound=Callable[..., Any])

ATTR = "__keyplane_signed__"


@dataclass(frozen=True, slots=True)
class RouteRule:
    # None: any valid key may call it (introspection: a key may always ask about itself).
    scope: Scope | None
    dialect: Dialect = "binance"
    weight: int = 1
    # Check the key's symbol allowlist against the request's ``symbol`` parameter.
    symbol_restricted: bool = False
    name: str = ""
    # Binance's USER_STREAM security: the API key alone, no signature (the listenKey routes); the
    # key must be one that may read its account's user-data stream (Authenticator.check_stream).
    key_only: bool = False


def signed(
    scope: Scope | None,
    *,
    dialect: Dialect = "binance",
    weight: int = 1,
    symbol_restricted: bool = False,
    key_only: bool = False,
) -> Callable[[F], F]:
    def mark(fn: F) -> F:
        setattr(fn, ATTR, RouteRule(scope, dialect, weight, symbol_restricted, fn.__name__, key_only))
        return fn

    return mark


def walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """(full path, route) of every route, inside included routers too (FastAPI keeps an included
    router as one lazy node: walk into it with its prefix)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from walk(included.routes, prefix + str(getattr(context, "prefix", "") or ""))
        elif isinstance(route, Route):
            yield prefix + route.path, route


def _never() -> None:  # the endpoint of a route used only for path matching
    raise RuntimeError("not callable")


class RouteTable:
    def __init__(self) -> None:
        self._exact: dict[tuple[str, str], RouteRule] = {}
        self._patterns: list[tuple[Route, RouteRule]] = []
        self._methods_for_path: dict[str, set[str]] = {}

    @classmethod
    def from_routes(cls, routes: Iterable[BaseRoute]) -> RouteTable:
        table = cls()
        table._add(routes, "")
        return table

    def _add(self, routes: Iterable[BaseRoute], prefix: str) -> None:
        for path, route in walk(routes, prefix):
            endpoint = getattr(route, "endpoint", None)
            rule = getattr(endpoint, ATTR, None)
            if rule is None or not isinstance(route, Route):
                continue
            methods = route.methods or {"GET"}
            if "{" in path:
                self._patterns.append((Route(path, endpoint=_never, methods=list(methods)), rule))
            else:
                for m in methods:
                    self._exact[(m, path)] = rule

    def match(self, method: str, path: str, scope: MutableMapping[str, Any]) -> RouteRule | None:
        rule = self._exact.get((method, path))
        if rule is not None or not self._patterns:
            return rule
        if method == "HEAD":
            method = "GET"
        for route, rule in self._patterns:
            match, _ = route.matches({**scope, "method": method})
            if match is Match.FULL:
                return rule
        return None

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)
