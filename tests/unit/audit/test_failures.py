"""The throttled auth-failure recorder: a flood of failures becomes a few events with counts."""

from __future__ import annotations

from keyplane.audit.failures import FailureRecorder
from keyplane.auth import errors as E
from keyplane.keys import format as keyformat


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def test_a_flood_is_grouped_per_key_ip_and_reason():
    clock = Clock()
    rec = FailureRecorder(window_s=60, clock=clock)
    for _ in range(1000):
        rec(E.SignatureInvalid("bad"), key_id=None, ip="203.0.113.1", route="/api/v3/account", method="GET")
    for _ in range(10):
        rec(E.KeyUnknown("no"), key_id=None, ip="203.0.113.1", route="/api/v3/account", method="GET")
    rec(E.SignatureInvalid("bad"), key_id=None, ip="203.0.113.2", route="/v1/keys/self", method="GET")
    groups = {(g.ip, g.reason): g for g in rec.drain()}
    assert len(groups) == 3
    flood = groups[("203.0.113.1", "signature_invalid")]
    assert flood.count == 1000 and flood.route == "/api/v3/account" and flood.method == "GET"
    assert groups[("203.0.113.1", "key_unknown")].count == 10

    # Within the window, the same group is held and counted, not written again.
    clock.t += 10
    for _ in range(500):
        rec(E.SignatureInvalid("bad"), key_id=None, ip="203.0.113.1", route="/api/v3/account", method="GET")
    assert rec.drain() == []
    clock.t += 51
    later = rec.drain()
    assert [(g.reason, g.count) for g in later] == [("signature_invalid", 500)]
    assert later[0].first == 1_700_000_010.0


def test_key_ids_are_kept_only_when_the_caller_vouches_for_them():
    rec = FailureRecorder(window_s=60, clock=Clock(), keep_key_id=keyformat.is_valid_api_key)
    rec(E.KeyChecksum("x"), key_id="sk_pasted_secret_value", ip="192.0.2.1", route="/api/v3/account", method="GET")
    good = keyformat.new_api_key("live")
    rec(E.SignatureInvalid("x"), key_id=good, ip="192.0.2.1", route="/api/v3/account", method="GET")
    groups = {g.reason: g for g in rec.drain()}
    assert groups["key_checksum"].key_id is None
    assert groups["signature_invalid"].key_id == good
    # By default no key id is stored at all: the audit log cannot tell a key from a pasted secret.
    bare = FailureRecorder(window_s=60, clock=Clock())
    bare(E.SignatureInvalid("x"), key_id=good, ip="192.0.2.1", route="/api/v3/account", method="GET")
    assert [g.key_id for g in bare.drain()] == [None]


def test_memory_is_bounded():
    rec = FailureRecorder(window_s=60, clock=Clock())
    for i in range(12_000):
        rec(E.SignatureInvalid("bad"), key_id=None, ip=f"10.0.{i // 256}.{i % 256}", route="/", method="GET")
    groups = rec.drain()
    assert len(groups) <= 10_001
    assert sum(g.count for g in groups) == 12_000
    assert rec.dropped == 2_000


def test_restore_keeps_counts_for_the_next_flush():
    rec = FailureRecorder(window_s=60, clock=Clock())
    rec(E.SignatureInvalid("bad"), key_id=None, ip="192.0.2.1", route="/", method="GET")
    groups = rec.drain()
    rec.restore(groups)  # the database was down
    again = rec.drain()
    assert [g.count for g in again] == [1]
