"""The web console and its JSON twin under /v1/account, authenticated by session cookie + CSRF.

Pages are server-rendered Jinja2 templates (``templates/``, extend ``base.html``) with a little
JavaScript for copy buttons (``static/``). Other console pages reuse ``web.py``: ``page_user`` /
``api_user`` dependencies, ``check_csrf``, ``verify_step_up`` and ``render``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from keyplane.api import errors
from keyplane.api.console import api_account, pages_account, pages_keys, wallet
from keyplane.api.console.web import PageRedirect, render
from keyplane.api.state import AppState

STATIC_DIR = Path(__file__).parent / "static"
_API_PREFIXES = ("/api/", "/sapi/", "/v1/", "/healthz", "/openapi.json", "/docs", "/redoc")


def install(app: FastAPI, state: AppState) -> None:
    """Add this surface's routes to the app (its routers are included here as they are built)."""
    if state.key_manager is None:
        return

    @app.exception_handler(PageRedirect)
    async def _redirect(request: Request, exc: PageRedirect) -> RedirectResponse:
        return RedirectResponse(exc.location, status_code=303)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # A console page (not in the OpenAPI schema) answers with a page; everything else with JSON.
        error = errors.validation_error(exc)
        route = request.scope.get("route")
        if route is not None and not getattr(route, "include_in_schema", True):
            ctx = {"heading": "That request is not valid", "message": error.message, "back": "/keys"}
            return render(request, "message.html", ctx, status_code=error.status)
        return errors.render(error, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # A browser asking for a page that does not exist gets a page; API clients get JSON.
        error = errors.http_error(exc)
        path = request.url.path
        if not path.startswith(_API_PREFIXES) and "text/html" in request.headers.get("accept", ""):
            heading = "Page not found" if exc.status_code == 404 else "That request is not possible"
            ctx = {"heading": heading, "message": error.message, "back": "/keys"}
            page = render(request, "message.html", ctx, status_code=error.status)
            page.headers.update(getattr(error, "headers", {}))
            return page
        return errors.render(error, path)

    app.mount("/static/console", StaticFiles(directory=str(STATIC_DIR)), name="console-static")
    app.include_router(api_account.router)
    app.include_router(pages_account.router)
    app.include_router(pages_keys.router)
    app.include_router(wallet.router)
    app.include_router(wallet.api)
