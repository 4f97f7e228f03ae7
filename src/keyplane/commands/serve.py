"""``keyplane serve``: run the server (uvicorn) on the configured database."""

from __future__ import annotations

import gc
import logging
from typing import Annotated

import typer

from keyplane.commands.common import fail, load_settings, out_console


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default KEYPLANE_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default KEYPLANE_PORT, 8000).")] = None,
) -> None:
    """Start the server. Migrations run automatically; embedded SQLite needs no other service."""
    import uvicorn

    from keyplane.api.app import create_app
    from keyplane.api.streams import SERVER_OPTIONS as STREAM_OPTIONS
    from keyplane.auth.replaylog import hold_data_dir
    from keyplane.errors import KeyplaneError
    from keyplane.services import build_services

    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.log_level != "debug":  # Alembic's start-up chatter is noise at info level
        logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        services = build_services(settings)  # checks the data dir and database, in one line each
        if not settings.redis_url:
            hold_data_dir(settings.data_dir)  # one server per data dir without Redis (auth/replaylog.py)
    except KeyplaneError as e:
        fail(e.message)
    app = create_app(settings, services)
    # What is built by now (modules, the app, its services) lives as long as the server: kept out
    # of the collector's reach, a full collection under load walks only what requests left alive
    # (it walked some 135,000 objects for 130-210 ms, stalling the event loop; benchmarks/exchange).
    gc.collect()
    gc.freeze()
    bind_host, bind_port = host or settings.host, port or settings.port
    where = "embedded SQLite at " + str(settings.data_dir) if settings.is_sqlite else "PostgreSQL"
    out_console.print(f"keyplane on http://{bind_host}:{bind_port} ({where})", highlight=False)
    uvicorn.run(
        app,
        host=bind_host,
        port=bind_port,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,  # keyplane reads X-Forwarded-For itself, only from trusted proxies
        server_header=False,
        **STREAM_OPTIONS,  # type: ignore[arg-type]
    )
