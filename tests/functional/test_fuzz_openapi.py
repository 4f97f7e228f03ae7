"""Schemathesis over the app's own OpenAPI document (``/openapi.json``): every documented route, with
inputs generated from its schema (valid and invalid), called on a live server with a logged-in
console session and its CSRF token. Never a 5xx; an error answers in the route's dialect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from kptest.backends import db_scope
from kptest.console import ConsoleClient
from kptest.server import ThreadServer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
EXAMPLES = 15  # per route: 46 routes, well under a minute in all


@pytest.fixture(scope=db_scope("module"))
def console_user(server: ThreadServer) -> Iterator[ConsoleClient]:
    """Signed up, TOTP on, logged in: a session cookie and a CSRF token for every call."""
    client = ConsoleClient(server.url).ready()
    yield client
    client.close()


def _check_shape(path: str, status: int, body: Any) -> None:
    assert status < 500, f"{path}: {status} {body!r:.300}"
    if status < 400:
        return
    assert isinstance(body, dict), f"{path}: {status} {body!r:.300}"
    if path.startswith(("/api/", "/sapi/")):
        assert isinstance(body.get("code"), int) and isinstance(body.get("msg"), str), body
    else:
        assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body


def test_no_documented_route_answers_5xx(server: ThreadServer, console_user: ConsoleClient) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every route of the document is fuzzed, but logging out would end the session the rest run in.
    operations = [op for op in operations if op.path != "/v1/account/logout"]
    assert len(operations) > 20
    session = httpx.Client(base_url=server.url, timeout=20)

    for op in operations:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url=server.url)
            headers = {**(kwargs.get("headers") or {}), "X-CSRF-Token": console_user.csrf}
            cookies = {**(kwargs.get("cookies") or {}), **dict(console_user.http.cookies)}
            session.cookies.clear()
            response = session.request(
                kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=headers, cookies=cookies,
                content=kwargs.get("data") if isinstance(kwargs.get("data"), (bytes, str)) else None,
                json=kwargs.get("json"),
            )  # fmt: skip
            assert response.headers.get("connection", "").lower() != "close", (
                f"{case.operation.path}: connection dropped"
            )
            try:
                body = response.json()
            except ValueError:
                body = response.text
            _check_shape(case.operation.path, response.status_code, body)

        run()
    session.close()
