"""The keyplane app plus an unsigned twin of a signed endpoint, for the throughput comparison.

    python -m benchmarks.auth.bench_app DATA_DIR PORT

The twins run the same handler on the same stack with a fixed key record. ``/sapi/v1/bench/apiRestrictions``
is on the Binance surface, so it passes the per-IP limit of every unsigned route there: the only
difference from the signed route is the signed-request verification (and the per-key limit in place of
the per-IP one). ``/bench/open/apiRestrictions`` is outside it and passes no limit at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from fastapi import Request

from benchmarks.auth.compat import record_loader
from keyplane.api.app import create_app
from keyplane.api.binance import account
from keyplane.api.binance.account import restrictions_view
from keyplane.auth.pipeline import AuthContext
from keyplane.auth.routes import RouteRule
from keyplane.services import build_services
from keyplane.settings import Settings


def main() -> None:
    data_dir, port, key_id = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    # Limits far above what the run sends: this measures verification, not throttling.
    settings = Settings(
        data_dir=data_dir,
        database_url=None,
        redis_url=None,
        rate_limit_per_key="100000000/minute",
        rate_limit_per_ip="100000000/minute",
        rate_limit_public_per_ip="100000000/minute",
    )
    services = build_services(settings)
    record = record_loader(services)(key_id)
    assert record is not None
    fixed = AuthContext(record, {}, "127.0.0.1", RouteRule(None), "binance")

    async def open_twin(request: Request) -> dict[str, object]:
        return restrictions_view(fixed)

    # Same router as the signed route. The first twin is on the Binance surface, where every
    # unsigned route is limited per client IP (and answers with its used weight), as the signed
    # route would be if it needed no signature; the second is outside it, with no limit at all.
    account.router.add_api_route("/sapi/v1/bench/apiRestrictions", open_twin, methods=["GET"])
    account.router.add_api_route("/bench/open/apiRestrictions", open_twin, methods=["GET"])
    app = create_app(settings, services)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
