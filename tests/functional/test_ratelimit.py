"""Rate limits per key and per IP, with route weights, and each surface's headers."""

from __future__ import annotations

import httpx

from keyplane.accounts.stepup import StepUp
from kptest.clients import signed_get
from kptest.native import native_request, own_server, unique_prefix


def test_binance_key_limit_answers_429_with_retry_after_and_used_weight(make_settings):
    with own_server(make_settings, rate_limit_per_key="5/minute") as (srv, svc):
        owner = svc.accounts.create_user(f"rl-{srv.url[-5:]}-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, step_up=StepUp.operator())
        used = []
        for _ in range(5):
            resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret)
            assert resp.status_code == 200, resp.text
            used.append(int(resp.headers["X-MBX-USED-WEIGHT-1M"]))
        assert used == [1, 2, 3, 4, 5]
        resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret)
        assert resp.status_code == 429
        assert resp.json()["code"] == -1003 and resp.json()["reason"] == "rate_limited"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
        assert int(resp.headers["X-MBX-USED-WEIGHT-1M"]) == 6
        # Another key of the same user, same IP, is not limited by this key's limit.
        k2 = svc.keys.create(owner.id, step_up=StepUp.operator())
        assert signed_get(srv.url, "/api/v3/account", k2.info.api_key, k2.secret).status_code == 200


def test_native_limit_uses_ratelimit_headers(make_settings):
    with own_server(make_settings, rate_limit_per_key="3/minute") as (srv, svc):
        owner = svc.accounts.create_user(f"rln-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, step_up=StepUp.operator())
        remaining = []
        for _ in range(3):
            resp = native_request(srv.url, "/v1/keys/self", k.info.api_key, secret=k.secret)
            assert resp.status_code == 200, resp.text
            assert resp.headers["RateLimit-Limit"] == "3"
            remaining.append(int(resp.headers["RateLimit-Remaining"]))
            assert 0 < int(resp.headers["RateLimit-Reset"]) <= 60
        assert remaining == [2, 1, 0]
        resp = native_request(srv.url, "/v1/keys/self", k.info.api_key, secret=k.secret)
        assert resp.status_code == 429
        assert resp.json()["error"] == "rate_limited"
        assert resp.headers["RateLimit-Remaining"] == "0"
        assert int(resp.headers["Retry-After"]) >= 1


def test_route_weight_is_the_cost(make_settings):
    """A heavier route uses more of the limit (weights come from @signed(weight=...))."""
    with own_server(make_settings, rate_limit_per_key="100/minute") as (srv, svc):
        owner = svc.accounts.create_user(f"rlw-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, step_up=StepUp.operator())
        table = srv.server.config.app  # the FastAPI app
        weights = {}
        from keyplane.auth.routes import RouteTable

        routes = RouteTable.from_routes(table.routes)  # type: ignore[attr-defined]
        for path in ("/api/v3/account", "/sapi/v1/account/apiRestrictions"):
            rule = routes.match("GET", path, {"type": "http", "path": path, "method": "GET"})
            assert rule is not None
            weights[path] = rule.weight
        total = 0
        for path, weight in weights.items():
            resp = signed_get(srv.url, path, k.info.api_key, k.secret)
            assert resp.status_code == 200, resp.text
            total += weight
            assert int(resp.headers["X-MBX-USED-WEIGHT-1M"]) == total


def test_ip_limit_spans_keys_and_public_routes_are_ip_limited(make_settings):
    with own_server(
        make_settings, rate_limit_per_ip="4/minute", rate_limit_public_per_ip="3/minute", redis_prefix=unique_prefix()
    ) as (srv, svc):
        owner = svc.accounts.create_user(f"rli-{id(svc)}@example.com", "a long enough password")
        keys = [svc.keys.create(owner.id, step_up=StepUp.operator()) for _ in range(5)]
        statuses = [signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret).status_code for k in keys]
        assert statuses == [200, 200, 200, 200, 429]
        public = [httpx.get(srv.url + "/api/v3/time") for _ in range(4)]
        assert [r.status_code for r in public] == [200, 200, 200, 429]
        assert public[0].headers["X-MBX-USED-WEIGHT-1M"] == "1"
        assert public[-1].json()["reason"] == "rate_limited"
        assert "Retry-After" in public[-1].headers
