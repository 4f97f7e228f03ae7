"""``keyplane scan`` finds leaked credentials, names their keys, and revokes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kptest.clients import signed_get


@pytest.fixture
def env(settings, master_keys):
    out = {"KEYPLANE_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:  # PostgreSQL: this test's database, the one make_key writes to
        out |= {"KEYPLANE_DATABASE_URL": settings.database_url, "KEYPLANE_MASTER_KEYS": master_keys}
    return out


def scan(env, *args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "keyplane", "scan", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_offline_scan_reports_masked_and_exits_1(tmp_path, env, make_key):
    issued = make_key()
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "bot.py").write_text(f'API_KEY = "{issued.info.api_key}"\nSECRET = "{issued.secret}"\n')
    bad = issued.info.api_key[:-1] + ("x" if issued.info.api_key[-1] != "x" else "y")
    (repo / "notes.txt").write_text(f"typo: {bad}\n")
    proc = scan(env, str(repo), "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(f["kind"], f["where"].endswith(f"bot.py:{n}")) for f, n in zip(doc["found"], (1, 2), strict=True)] == [
        ("api_key", True),
        ("secret", True),
    ]
    assert issued.secret not in proc.stdout
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "a.txt").write_text("nothing here\n")
    assert scan(env, str(clean)).returncode == 0


def test_a_leaked_secret_alone_identifies_and_revokes_its_key(server, env, make_key, services):
    issued = make_key()
    other = make_key()
    assert signed_get(server.url, "/api/v3/account", issued.info.api_key, issued.secret).status_code == 200
    proc = scan(env, "--revoke", "--json", stdin=f"pastebin dump: secret={issued.secret}\n")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["found"][0]["api_key"] == issued.info.api_key
    assert doc["revoked"] == [issued.info.api_key]
    assert issued.secret not in proc.stdout
    assert services.keys.get(issued.info.api_key).status == "revoked"
    assert services.keys.get(other.info.api_key).status == "active"
    import time

    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if signed_get(server.url, "/api/v3/account", issued.info.api_key, issued.secret).status_code == 401:
            break
        time.sleep(0.05)
    assert (
        signed_get(server.url, "/api/v3/account", issued.info.api_key, issued.secret).json()["reason"] == "key_revoked"
    )

    from sqlalchemy import select

    from keyplane.audit.models import AuditEvent

    with services.db.read() as s:
        leaked = s.execute(
            select(AuditEvent.data).where(
                AuditEvent.key_id == issued.info.api_key, AuditEvent.event_type == "key:api_key:leaked"
            )
        ).scalar_one()
    assert "<stdin>:1" in leaked and issued.secret not in leaked


def test_a_key_revoked_already_still_gets_its_leak_evidence(services, make_key):
    """A leak report for a key someone revoked meanwhile still records where it leaked: that is
    what its owner reads to learn where the credential went. Nothing is revoked twice."""
    from sqlalchemy import select

    from keyplane.audit.models import AuditEvent
    from keyplane.keys import format as keyformat
    from keyplane.keys import leaks

    issued = make_key()
    services.keys.revoke(issued.info.api_key)
    found = [(keyformat.Credential("api_key", issued.info.api_key), "pastebin.txt:3")]
    matched = leaks.match(services.keys, found)
    assert [m.status for m in matched] == ["revoked"]
    assert leaks.revoke(services.keys, matched) == []  # this call revoked nothing
    with services.db.read() as s:
        events = s.execute(
            select(AuditEvent.event_type, AuditEvent.data).where(AuditEvent.key_id == issued.info.api_key)
        ).all()
    assert [e for e, _ in events].count("key:api_key:revoked") == 1
    assert [json.loads(d)["where"] for e, d in events if e == "key:api_key:leaked"] == ["pastebin.txt:3"]
