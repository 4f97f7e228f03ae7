"""The application factory: services, routers, the signed-request middleware and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from keyplane import __version__
from keyplane.api import binance, console, errors, native, streams, userstream, wsapi
from keyplane.api.state import AppState, periodic
from keyplane.audit.failures import FailureRecorder, flush_failures, flush_once
from keyplane.auth.broadcast import KeyChangePublisher, SubscriberStatus, subscribe_changes
from keyplane.auth.gates import MemoryGate, build_gate
from keyplane.auth.keycache import KeyCache, UsageRecorder, flush_usage, poll_changes
from keyplane.auth.middleware import SignedRequestMiddleware
from keyplane.auth.pipeline import Authenticator
from keyplane.auth.replaylog import ReplayLog
from keyplane.auth.routes import RouteTable
from keyplane.errors import ServiceUnavailable
from keyplane.keys import format as keyformat
from keyplane.keys.manage import KeyManager
from keyplane.services import Services, build_services
from keyplane.settings import Settings, get_settings
from keyplane.streams.hub import Hub

_SWEEP_INTERVAL_S = 60.0
_FAILURE_FLUSH_S = 1.0

# Each domain's HTTP package exports ``install(app, state)``, called once while the app is
# built and before the route table is read. ``state`` carries shared pieces: the key cache, the
# authenticator, background task factories ("tasks") and closers.
Installer = Callable[[FastAPI, AppState], None]
INSTALLERS: tuple[Installer, ...] = (
    binance.install, streams.install, userstream.install, wsapi.install, native.install, console.install,
)  # fmt: skip


class _HealthCheck:
    """``/healthz``'s database ping, answered within ``timeout_s`` whatever the database does.

    The ping runs on a thread of its own (never queued behind request work in the shared pool),
    and while an earlier ping is still waiting on the database, a new check does not pile another
    one on: it reports the database unhealthy at once."""

    def __init__(self, services: Services, timeout_s: float) -> None:
        self._services = services
        self._timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyplane-healthz")
        self._pending: Future[None] | None = None

    async def problem(self) -> str | None:
        """None if the database answered in time, else what is wrong, in one sentence."""
        if self._pending is not None and not self._pending.done():
            return f"the database has not answered a health check for over {self._timeout_s:g} s"
        self._pending = self._pool.submit(self._services.db.ping)
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(self._pending)), self._timeout_s)
        except TimeoutError:
            return f"the database did not answer within {self._timeout_s:g} s"
        except ServiceUnavailable as e:
            return e.message
        except Exception as e:  # a broken database file, say: unhealthy too, never a 500
            return f"the database check failed ({type(e).__name__})"
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    settings = settings or get_settings()
    services = services or build_services(settings)
    cache = KeyCache(services.keys.records.load, max_staleness_s=settings.key_cache_max_staleness_s)
    usage = UsageRecorder()
    gate = build_gate(settings)
    # One node without Redis: its replay tokens must outlive a restart (auth/replaylog.py).
    replay_log = ReplayLog(settings.data_dir / "replay", gate) if isinstance(gate, MemoryGate) else None
    failures = FailureRecorder(settings.audit_failure_window_s, keep_key_id=keyformat.is_valid_api_key)
    authenticator = Authenticator(settings, cache, gate=gate, usage=usage, on_failure=failures)
    services.keys.listeners.append(cache.evict)
    state = AppState(
        services=services,
        cache=cache,
        authenticator=authenticator,
        usage=usage,
        gate=gate,
        failures=failures,
        key_manager=None if services.identity is None else KeyManager(services.keys, services.identity),
        subscriber=SubscriberStatus() if settings.redis_url else None,
        hub=None if services.exchange is None else Hub(services.exchange),
        tasks=[lambda: flush_failures(failures, services.db, _FAILURE_FLUSH_S)],
    )
    if state.subscriber is not None:
        # Several nodes: tell the others which keys changed, and listen for their changes.
        publisher = KeyChangePublisher(settings)
        services.keys.listeners.append(publisher)
        subscriber = state.subscriber
        state.tasks.append(lambda: subscribe_changes(settings, cache, subscriber))
        state.closers.append(publisher.close)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if replay_log is not None:
            replay_log.open()
        tasks = [
            asyncio.create_task(poll_changes(cache, services.keys.records.changed_since, settings.key_cache_poll_s)),
            asyncio.create_task(flush_usage(usage, services.keys.records.record_usage, settings.last_used_flush_s)),
            asyncio.create_task(periodic(services.keys.records.sweep, _SWEEP_INTERVAL_S, "key expiry sweep")),
        ]
        tasks += [asyncio.create_task(factory()) for factory in state.tasks]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            batch = usage.drain()
            if batch:
                with contextlib.suppress(Exception):
                    services.keys.records.record_usage(batch)
            with contextlib.suppress(Exception):
                await flush_once(failures, services.db)
            with contextlib.suppress(Exception):
                await gate.close()
            if replay_log is not None:
                replay_log.close()
            for closer in state.closers:
                with contextlib.suppress(Exception):
                    closer()

    app = FastAPI(
        title="keyplane",
        version=__version__,
        description="Exchange API keys: a Binance-compatible surface, a native /v1 API and a console.",
        lifespan=lifespan,
    )
    app.state.keyplane = state
    errors.install(app)

    health = _HealthCheck(services, settings.healthz_timeout_s)
    state.closers.append(health.close)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> JSONResponse:
        problem = await health.problem()
        if problem is not None:
            return JSONResponse({"status": "unavailable", "message": problem}, status_code=503)
        return JSONResponse({"status": "ok", "version": __version__})

    for install in INSTALLERS:
        install(app, state)

    table = RouteTable.from_routes(app.routes)
    app.add_middleware(
        SignedRequestMiddleware,
        authenticator=authenticator,
        table=table,
        trusted_proxies=settings.trusted_proxies,
        max_body_bytes=settings.max_body_bytes,
    )
    # Outermost, so that it also catches what escapes the signed-request middleware.
    app.add_middleware(errors.LastResortMiddleware)
    # Outside even that: it must see the server's own send (streams' direct writes).
    app.add_middleware(streams.StreamSocket)
    return app
