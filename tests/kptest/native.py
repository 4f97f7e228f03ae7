"""Helpers for the native (RFC 9421) API: signed requests, and a private server with its own settings."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from keyplane.api.app import create_app
from keyplane.client.httpsig import sign_request
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.server import ThreadServer, start_in_thread


def native_request(
    base_url: str,
    path: str,
    key_id: str,
    *,
    secret: str | None = None,
    pem: str | None = None,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **sign: Any,
) -> httpx.Response:
    url = base_url + path
    signed = sign_request(method, url, {}, body, key_id=key_id, secret=secret, private_key_pem=pem, **sign)
    return httpx.request(method, url, headers={**signed, **(headers or {})}, content=body, timeout=10)


@contextmanager
def own_server(make_settings: Callable[..., Settings], **overrides: Any) -> Iterator[tuple[ThreadServer, Services]]:
    """A server with its own settings (tight limits, trusted proxies...), on this run's backend."""
    settings = make_settings(**overrides)
    services = build_services(settings)
    srv = start_in_thread(create_app(settings, services))
    try:
        yield srv, services
    finally:
        srv.stop()
        services.close()


def unique_prefix() -> str:
    """A Redis prefix of its own, for a server whose per-IP state must not meet other tests'."""
    return f"kptest:{secrets.token_hex(4)}:"
