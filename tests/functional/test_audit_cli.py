"""``keyplane audit verify`` and ``export``, run as a user runs them, on a database of their own
(so tampering never touches the run's shared database)."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from keyplane.accounts.stepup import StepUp
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.backends import Backend, postgres_database


@pytest.fixture
def audited(tmp_path: Path, kp_backend: Backend, master_keys: str) -> Iterator[tuple[dict[str, str], Services]]:
    """A fresh database with a few audit events, and the env that points the CLI at it."""
    with contextlib.ExitStack() as stack:
        env = {"KEYPLANE_DATA_DIR": str(tmp_path / "data")}
        if kp_backend.postgres:
            env["KEYPLANE_DATABASE_URL"] = stack.enter_context(postgres_database())
            env["KEYPLANE_MASTER_KEYS"] = master_keys
        settings = Settings(
            data_dir=tmp_path / "data",
            database_url=env.get("KEYPLANE_DATABASE_URL"),
            master_keys=env.get("KEYPLANE_MASTER_KEYS"),
        )
        svc = build_services(settings)
        stack.callback(svc.close)
        user = svc.accounts.create_user("audited@example.com", "a long enough password")
        keys = [svc.keys.create(user.id, step_up=StepUp.operator()) for _ in range(3)]
        svc.keys.disable(keys[0].info.api_key)
        svc.keys.revoke(keys[1].info.api_key)
        yield env, svc


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyplane", "audit", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _sql(svc: Services, *statements: str) -> None:
    with svc.db.transaction() as session:
        for s in statements:
            session.execute(text(s))


def _count(svc: Services) -> int:
    with svc.db.read() as session:
        return int(session.execute(text("SELECT count(*) FROM audit_events")).scalar_one())


def test_verify_passes_on_an_untouched_log(audited):
    env, svc = audited
    proc = cli(env, "verify", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["events"] == _count(svc) >= 6


SWAP = (
    "UPDATE audit_events SET event_type = CASE seq WHEN 3 THEN (SELECT event_type FROM audit_events WHERE seq = 4) "
    "ELSE (SELECT event_type FROM audit_events WHERE seq = 3) END, "
    "key_id = CASE seq WHEN 3 THEN (SELECT key_id FROM audit_events WHERE seq = 4) "
    "ELSE (SELECT key_id FROM audit_events WHERE seq = 3) END, "
    "hash = CASE seq WHEN 3 THEN (SELECT hash FROM audit_events WHERE seq = 4) "
    "ELSE (SELECT hash FROM audit_events WHERE seq = 3) END WHERE seq IN (3, 4)"
)


@pytest.mark.parametrize(
    ("tamper", "bad_seq", "kind"),
    [
        (["UPDATE audit_events SET ip = '6.6.6.6' WHERE seq = 3"], 3, "hash_mismatch"),
        (['UPDATE audit_events SET data = \'{"scopes":["withdraw"]}\' WHERE seq = 2'], 2, "hash_mismatch"),
        (["DELETE FROM audit_events WHERE seq = 3"], 4, "seq_gap"),
        ([SWAP], 3, "hash_mismatch"),
        (["UPDATE audit_events SET seq = seq + 1000 WHERE seq = 2"], 3, "seq_gap"),
        (["DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)"], None, "head_mismatch"),
    ],
    ids=["edit-ip", "edit-data", "delete", "reorder", "move", "truncate"],
)
def test_verify_names_the_first_bad_event(audited, tamper, bad_seq, kind):
    env, svc = audited
    last = _count(svc)
    _sql(svc, *tamper)
    proc = cli(env, "verify")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    expected = bad_seq if bad_seq is not None else last
    assert f"BROKEN at event {expected} ({kind})" in proc.stderr
    doc = json.loads(cli(env, "verify", "--json").stdout)
    assert doc["ok"] is False and doc["first_bad_seq"] == expected and doc["problem"] == kind


def test_export_jsonl_and_csv(audited, tmp_path):
    env, svc = audited
    proc = cli(env, "export", "--format", "jsonl")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, _count(svc) + 1))
    types = {r["type"] for r in rows}
    assert {"key:api_key:created", "key:api_key:disabled", "key:api_key:revoked"} <= types
    assert all(len(r["hash"]) == 64 and isinstance(r["data"], dict) for r in rows)

    out = tmp_path / "audit.csv"
    proc = cli(env, "export", "--format", "csv", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {len(rows)} events" in proc.stderr
    parsed = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(r["seq"]) for r in parsed] == [r["seq"] for r in rows]
    assert json.loads(parsed[0]["data"]) == rows[0]["data"]

    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert cli(env, "export", "--since", future).stdout == ""
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    assert len(cli(env, "export", "--since", past).stdout.splitlines()) == len(rows)
    bad = cli(env, "export", "--since", "yesterday")
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr
    assert cli(env, "export", "--format", "xml").returncode == 2
