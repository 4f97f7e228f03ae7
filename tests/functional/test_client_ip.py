"""The client IP: the socket peer, unless it is a trusted proxy. Spoofing X-Forwarded-For from
outside must not get past an IP allowlist."""

from __future__ import annotations

from keyplane.accounts.stepup import StepUp
from kptest.clients import signed_get
from kptest.native import native_request, own_server


def test_spoofed_forwarded_for_does_not_pass_an_allowlist(server, make_key):
    # The session server trusts no proxy: X-Forwarded-For is ignored, the peer (127.0.0.1) counts.
    k = make_key(ips=["203.0.113.9/32"])
    spoof = {"X-Forwarded-For": "203.0.113.9"}
    resp = signed_get(server.url, "/api/v3/account", k.info.api_key, k.secret, headers=spoof)
    assert resp.status_code == 401
    assert resp.json()["reason"] == "ip_not_allowed"
    assert "127.0.0.1" in resp.json()["msg"]
    native = native_request(server.url, "/v1/keys/self", k.info.api_key, secret=k.secret, headers=spoof)
    assert native.json()["error"] == "ip_not_allowed"


def test_forwarded_for_through_a_trusted_proxy_is_honoured(make_settings):
    with own_server(make_settings, trusted_proxies="127.0.0.1/32") as (srv, svc):
        owner = svc.accounts.create_user(f"ip-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(
            owner.id, restrictions=svc.keys.build_restrictions(ips=["203.0.113.9/32"]), step_up=StepUp.operator()
        )
        via = {"X-Forwarded-For": "203.0.113.9"}
        resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=via)
        assert resp.status_code == 200, resp.text
        native = native_request(srv.url, "/v1/keys/self", k.info.api_key, secret=k.secret, headers=via)
        assert native.status_code == 200 and native.json()["caller_ip"] == "203.0.113.9"
        # A client that prepends its own hop cannot choose the address: the rightmost untrusted hop wins.
        chained = {"X-Forwarded-For": "203.0.113.9, 192.0.2.50"}
        resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=chained)
        assert resp.status_code == 401 and "192.0.2.50" in resp.json()["msg"]
