"""Native key introspection and server time. Both are read-only.

``GET /v1/keys/self`` is the only ``/v1/keys`` route: any valid key may ask about itself (its
scopes, restrictions, expiry, and the caller's IP as the server sees it). Keys are created and
changed in the console and the admin CLI, behind 2FA, never with a key's own signature.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from keyplane.api.deps import signed_context
from keyplane.auth.routes import signed

router = APIRouter(prefix="/v1", tags=["native"])


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@router.get("/time")
async def server_time() -> dict[str, int]:
    """The server's clock, for clients whose ``created`` falls outside the window."""
    now = time.time()
    return {"time": int(now), "time_ms": int(now * 1000)}


@router.get("/keys/self")
@signed(None, dialect="httpsig")
async def key_self(request: Request) -> dict[str, Any]:
    ctx = signed_context(request)
    key = ctx.key
    r = key.restrictions
    return {
        "key_id": key.public_id,
        "key_type": key.key_type,
        "status": key.status,
        "scopes": sorted(s.value for s in key.scopes),
        "restrictions": r.to_json(),
        "expires_at": _iso(key.deadline_ts(None)),
        "idle_expiry": key.idle_s is not None,
        "created_at": _iso(key.created_ts),
        "caller_ip": ctx.client_ip,
    }
