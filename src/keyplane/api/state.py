"""What one app holds for its lifetime, typed: the services, the verification pipeline and its
parts, and the background tasks and closers that the surfaces register at install time.

Routes reach it through :func:`app_state`; nothing is looked up by a string key.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from keyplane.audit.failures import FailureRecorder
from keyplane.auth.broadcast import SubscriberStatus
from keyplane.auth.gates import MemoryGate, RedisGate
from keyplane.auth.keycache import KeyCache, UsageRecorder
from keyplane.auth.pipeline import Authenticator
from keyplane.keys.manage import KeyManager
from keyplane.services import Services
from keyplane.streams.hub import Hub

TaskFactory = Callable[[], Coroutine[Any, Any, None]]
log = logging.getLogger("keyplane")


async def periodic(fn: Callable[[], object], interval_s: float, name: str) -> None:
    """A background task: ``fn`` on a worker thread every ``interval_s``. A failure is logged and
    the loop goes on; the next round retries."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(fn)
        except Exception as e:
            log.warning("%s failed: %s", name, type(e).__name__)


@dataclass(frozen=True, slots=True)
class AppState:
    services: Services
    cache: KeyCache
    authenticator: Authenticator
    usage: UsageRecorder
    gate: MemoryGate | RedisGate
    failures: FailureRecorder
    key_manager: KeyManager | None  # None when the server runs without accounts
    subscriber: SubscriberStatus | None = None  # several nodes: the key-change listener's health
    hub: Hub | None = None  # the market streams' fan-out; None when the server runs without an exchange
    # Started by the app's lifespan and cancelled at its end; surfaces append theirs at install.
    tasks: list[TaskFactory] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.keyplane
    return state
