"""Temporary lockout: repeated auth failures from one IP lock that IP out, and only that IP.

Client IPs are set through a trusted proxy (X-Forwarded-For from 127.0.0.1), so one test can play
an attacker and the key's owner from different addresses.
"""

from __future__ import annotations

import time

from keyplane.accounts.stepup import StepUp
from kptest.clients import signed_get
from kptest.native import native_request, own_server, unique_prefix

ATTACKER = {"X-Forwarded-For": "203.0.113.66"}
OWNER = {"X-Forwarded-For": "198.51.100.7"}
PROBE = {"X-Forwarded-For": "192.0.2.44"}


def test_repeated_failures_lock_the_ip_not_the_owner(make_settings):
    with own_server(
        make_settings,
        trusted_proxies="127.0.0.1/32",
        lockout_failures=5,
        lockout_window_s=60,
        lockout_s=2,
        redis_prefix=unique_prefix(),
    ) as (srv, svc):
        owner = svc.accounts.create_user(f"lock-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, step_up=StepUp.operator())
        for _ in range(5):  # wrong secret: a guessing signal
            resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, "wrong" * 10, headers=ATTACKER)
            assert resp.json()["reason"] == "signature_invalid"
        deadline = time.monotonic() + 3
        resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=ATTACKER)
        while resp.status_code != 429 and time.monotonic() < deadline:  # Redis mode counts off the request path
            time.sleep(0.05)
            resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=ATTACKER)
        # Locked out even with the right secret, with a Retry-After.
        assert resp.status_code == 429, resp.text
        locked_at = time.monotonic()
        assert resp.json()["reason"] == "ip_locked_out"
        assert resp.json()["code"] == -1003
        assert int(resp.headers["Retry-After"]) >= 1
        native = native_request(srv.url, "/v1/keys/self", k.info.api_key, secret=k.secret, headers=ATTACKER)
        assert native.status_code == 429 and native.json()["error"] == "ip_locked_out"
        # The owner, on another IP, is not affected.
        ok = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=OWNER)
        assert ok.status_code == 200, ok.text
        # The lockout is temporary: the IP is let in again once its 2 s are over. A request refused
        # for a lockout does not count as a failure, so polling does not extend it.
        deadline = locked_at + 2 + 0.5
        resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=ATTACKER)
        while resp.status_code == 429 and resp.json()["reason"] == "ip_locked_out":
            assert time.monotonic() < deadline, "the IP was still locked out 0.5 s after its 2 s lockout"
            time.sleep(0.05)
            resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=ATTACKER)
        assert resp.status_code == 200, resp.text


def test_clock_errors_and_scope_misses_do_not_count(make_settings):
    with own_server(
        make_settings, trusted_proxies="127.0.0.1/32", lockout_failures=3, redis_prefix=unique_prefix()
    ) as (srv, svc):
        owner = svc.accounts.create_user(f"lock2-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, step_up=StepUp.operator())
        for _ in range(6):
            resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, timestamp=1, headers=ATTACKER)
            assert resp.json()["reason"] == "timestamp_outside_window"
        # Had those counted, the lockout would follow them (in Redis mode, failures are counted off the
        # request path). Rather than a pause, three failures that do count, from another IP, after
        # them: once that IP is locked out, the gate has counted everything sent before.
        for _ in range(3):
            resp = signed_get(srv.url, "/api/v3/account", k.info.api_key, "wrong" * 10, headers=PROBE)
            assert resp.json()["reason"] == "signature_invalid"
        deadline = time.monotonic() + 3
        while (
            resp := signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=PROBE)
        ).status_code != 429:
            assert time.monotonic() < deadline, f"3 signature failures did not lock {PROBE} out: {resp.text}"
            time.sleep(0.02)
        assert resp.json()["reason"] == "ip_locked_out"
        assert signed_get(srv.url, "/api/v3/account", k.info.api_key, k.secret, headers=ATTACKER).status_code == 200


def test_auth_failures_reach_the_audit_log_throttled(make_settings):
    """A flood of failures becomes one event per (key, IP, reason), with its count, written off the
    request path."""
    import json

    from sqlalchemy import select

    from keyplane.audit.models import AuditEvent

    flood_ip = "203.0.113.77"
    with own_server(make_settings, trusted_proxies="127.0.0.1/32", redis_prefix=unique_prefix()) as (srv, svc):
        owner = svc.accounts.create_user(f"aud-{id(svc)}@example.com", "a long enough password")
        k = svc.keys.create(owner.id, step_up=StepUp.operator())
        for _ in range(40):
            resp = signed_get(
                srv.url, "/api/v3/account", k.info.api_key, "wrong" * 10, headers={"X-Forwarded-For": flood_ip}
            )
            assert resp.json()["reason"] == "signature_invalid"
        deadline = time.monotonic() + 5
        rows: list[tuple[str | None, str]] = []
        query = select(AuditEvent.key_id, AuditEvent.data).where(
            AuditEvent.event_type == "auth:request:failed", AuditEvent.ip == flood_ip
        )
        while True:
            with svc.db.read() as session:
                rows = [(r.key_id, r.data) for r in session.execute(query)]
            if rows:
                break
            assert time.monotonic() < deadline, "no auth:request:failed event within 5 s of the flood"
            time.sleep(0.05)
        # Another flush must not write the rest of the flood (it stays folded into the window). Rather
        # than a pause for the flusher, one failure from another IP, after the flood: its event is
        # written by a later flush, which would write the flood's rest with it.
        marker_ip = "203.0.113.78"
        resp = signed_get(
            srv.url, "/api/v3/account", k.info.api_key, "wrong" * 10, headers={"X-Forwarded-For": marker_ip}
        )
        assert resp.json()["reason"] == "signature_invalid"
        marker = select(AuditEvent.seq).where(
            AuditEvent.event_type == "auth:request:failed", AuditEvent.ip == marker_ip
        )
        deadline = time.monotonic() + 5
        while True:
            with svc.db.read() as session:
                if session.execute(marker).first() is not None:
                    break
            assert time.monotonic() < deadline, "the flusher wrote no event for the marker failure within 5 s"
            time.sleep(0.05)
        with svc.db.read() as session:
            rows = [(r.key_id, r.data) for r in session.execute(query)]
        assert len(rows) == 1, "a flood must not flood the log"
        key_id, text = rows[0]
        data = json.loads(text)
        assert key_id == k.info.api_key
        assert data["reason"] == "signature_invalid"
        assert data["route"] == "/api/v3/account" and data["method"] == "GET"
        # The first flush may land mid-flood; the rest is counted towards the group's next event.
        assert 1 <= data["count"] <= 40
        assert data["first_at"] <= data["last_at"]
