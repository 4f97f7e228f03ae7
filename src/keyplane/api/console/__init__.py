"""The web console and its JSON twin under /v1/account, authenticated by session cookie + CSRF.

Pages are server-rendered Jinja2 templates (``templates/``, extend ``base.html``) with a little
JavaScript for copy buttons (``static/``). Other console pages reuse ``web.py``: ``page_user`` /
``api_user`` dependencies, ``check_csrf``, ``verify_step_up`` and ``render``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from keyplane.accounts.keyactions import KeyActions
from keyplane.api.console import api_account, pages_account, pages_keys, wallet
from keyplane.api.console.web import PageRedirect
from keyplane.services import Services

STATIC_DIR = Path(__file__).parent / "static"


def install(app: FastAPI, services: Services, state: dict[str, Any]) -> None:
    """Add this surface's routes to the app (its routers are included here as they are built)."""
    if services.identity is None:
        return
    state["key_actions"] = KeyActions(services.keys, services.identity)

    @app.exception_handler(PageRedirect)
    async def _redirect(request: Request, exc: PageRedirect) -> RedirectResponse:
        return RedirectResponse(exc.location, status_code=303)

    app.mount("/static/console", StaticFiles(directory=str(STATIC_DIR)), name="console-static")
    app.include_router(api_account.router)
    app.include_router(pages_account.router)
    app.include_router(pages_keys.router)
    wallet.install(app)
