"""Each test on PostgreSQL gets a database state of its own (tests/kptest/backends.py).

The tests below run in file order: the first leaves a user, a key, an audit event and a Redis key
behind, and the ones after it must see none of them, through ``services``, through the live
``server``, or in Redis. The last runs this file again in a pytest process of its own and checks that
once that run has ended none of its databases (the template, the clones) and none of its Redis keys
are left. On SQLite the shared fixtures (``services``, ``server``) are the session's, so these tests
do not apply there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import text

from keyplane.accounts.stepup import StepUp
from keyplane.keys.errors import UserNotFound
from keyplane.services import Services, build_services
from keyplane.settings import Settings
from kptest.backends import PG_ADMIN, REDIS_URL, Backend, backend_name
from kptest.clients import signed_get

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        backend_name() != "postgres", reason="on SQLite the session shares services and server: not isolated per test"
    ),
]

# Set in the run that test_6 starts: where that run notes the databases and Redis prefix it used.
REPORT = "KEYPLANE_TEST_ISOLATION_REPORT"
EMAIL = "isolation@example.com"
LEFT: dict[str, Any] = {}  # what the first test left behind


def _db_name(url: str | None) -> str:
    assert url is not None
    return url.rsplit("/", 1)[1]


def _databases(names: list[str]) -> set[str]:
    """Which of ``names`` exist now."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (names,)).fetchall()
    return {name for (name,) in rows}


def _note(**seen: Any) -> None:
    """In the run test_6 starts, add to what that run reports (lists are extended)."""
    path = os.environ.get(REPORT)
    if not path:
        return
    report = json.loads(Path(path).read_text()) if Path(path).exists() else {}
    for k, v in seen.items():
        report[k] = report.get(k, []) + v if isinstance(v, list) else v
    Path(path).write_text(json.dumps(report))


def _counts(services: Services) -> dict[str, int]:
    with services.db.read() as s:
        c = s.connection()
        return {
            t: c.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in ("users", "api_keys", "audit_events")
        }


@pytest.fixture(scope="module")
def module_settings(make_settings: Callable[..., Settings]) -> Settings:
    """A module's fixture: its database lives until the module ends, apart from every test's."""
    return make_settings()


def test_1_leaves_a_user_a_key_and_a_redis_key_behind(services, server, settings, kp_backend: Backend):
    assert _counts(services) == {"users": 0, "api_keys": 0, "audit_events": 0}  # the migrated state
    user = services.accounts.create_user(EMAIL, "correct horse battery staple")
    issued = services.keys.create(user.id, step_up=StepUp.operator())
    assert signed_get(server.url, "/api/v3/account", issued.info.api_key, issued.secret).status_code == 200
    assert settings.redis_prefix.startswith(kp_backend.redis_prefix)  # so flushed at the end of the run
    r = redis.Redis.from_url(settings.redis_url or "")
    r.set(settings.redis_prefix + "isolation-probe", "1", ex=300)
    LEFT.update(
        user_id=user.id,
        key=issued.info.api_key,
        secret=issued.secret,
        database=settings.database_url,
        prefix=settings.redis_prefix,
        server=server,
    )
    assert _counts(services)["users"] == 1
    assert kp_backend.pool is not None
    template = kp_backend.pool.template
    assert _databases([template, _db_name(settings.database_url)]) == {template, _db_name(settings.database_url)}
    _note(template=template, run_prefix=kp_backend.redis_prefix, databases=[template, _db_name(settings.database_url)])


@pytest.fixture
def left() -> dict[str, Any]:
    if not LEFT:
        pytest.skip("needs test_1 to have run first in this session (file order)")
    return LEFT


def test_2_sees_none_of_it(services, server, settings, left):
    assert settings.database_url != left["database"]
    assert settings.redis_prefix != left["prefix"]
    assert server is not left["server"]  # a live server of its own, on this test's database
    assert not left["server"].thread.is_alive()  # test_1's was stopped when test_1 ended
    assert _counts(services) == {"users": 0, "api_keys": 0, "audit_events": 0}
    with pytest.raises(UserNotFound):
        services.keys.user_id_for_email(EMAIL)
    refused = signed_get(server.url, "/api/v3/account", left["key"], left["secret"])
    assert refused.status_code == 401, refused.text
    r = redis.Redis.from_url(settings.redis_url or "")
    assert r.get(settings.redis_prefix + "isolation-probe") is None
    # The same email is free again, and sequences start over: exactly the freshly migrated state.
    again = services.accounts.create_user(EMAIL, "correct horse battery staple")
    assert again.id == left["user_id"]
    _note(databases=[_db_name(settings.database_url)])


def test_3_every_make_settings_call_has_a_database_of_its_own(make_settings, settings, left):
    a, b = make_settings(), make_settings()
    assert len({a.database_url, b.database_url, settings.database_url, left["database"]}) == 4
    assert len({a.redis_prefix, b.redis_prefix, settings.redis_prefix, left["prefix"]}) == 4
    svc_a, svc_b = build_services(a), build_services(b)
    try:
        svc_a.accounts.create_user(EMAIL, "correct horse battery staple")
        with pytest.raises(UserNotFound):
            svc_b.keys.user_id_for_email(EMAIL)
    finally:
        svc_a.close()
        svc_b.close()
    LEFT["body_databases"] = [_db_name(a.database_url), _db_name(b.database_url)]
    _note(databases=LEFT["body_databases"])


def test_4_a_module_fixture_has_a_database_of_its_own(module_settings, services, settings, left):
    assert module_settings.database_url not in (settings.database_url, left["database"])
    svc = build_services(module_settings)
    try:
        svc.accounts.create_user(EMAIL, "correct horse battery staple")
    finally:
        svc.close()
    with pytest.raises(UserNotFound):  # this test's database did not get the module's user
        services.keys.user_id_for_email(EMAIL)
    _note(databases=[_db_name(module_settings.database_url)])


def test_5_the_databases_of_ended_tests_are_dropped(left):
    """Dropped in the background once their tests ended (a drop waits for a checkpoint)."""
    names = [_db_name(left["database"]), *left.get("body_databases", [])]
    assert len(names) == 3, "needs test_3 to have run first in this session (file order)"
    deadline = time.monotonic() + 60
    while still := _databases(names):
        assert time.monotonic() < deadline, f"{sorted(still)} not dropped within 60 s of their tests' end"
        time.sleep(0.1)


def _run_this_file(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """This file's tests in a pytest run of their own, and what that run reports (see ``_note``)."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, REPORT: str(report), "KEYPLANE_TEST_BACKEND": "postgres"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc, (json.loads(report.read_text()) if report.exists() else {})


def test_6_a_run_leaves_no_database_and_no_redis_key_behind(tmp_path):
    if os.environ.get(REPORT):
        pytest.skip("already the run that test_6 started")
    proc, seen = _run_this_file(tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "5 passed, 1 skipped" in proc.stdout, proc.stdout[-4000:]
    # The template, test_1's, test_2's, the two of test_3's body, and the module fixture's: six.
    databases = seen["databases"]
    assert len(set(databases)) == 6 and seen["template"] in databases
    assert _databases(databases) == set()
    run = seen["template"].removeprefix("kp_tpl_").replace("_", "\\_")  # LIKE: a literal _
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
            (f"kp\\_tpl\\_{run}%", f"kp\\_t\\_{run}\\_%"),
        ).fetchall()
    assert rows == []  # nor any clone made ahead that no test took
    r = redis.Redis.from_url(REDIS_URL)
    assert list(r.scan_iter(match=seen["run_prefix"] + "*", count=1000)) == []  # test_1's probe included
