"""``keyplane serve`` on a data directory or database it cannot use: one line that names it and
the problem, a non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    full.update({"KEYPLANE_PORT": "1", **env})
    return subprocess.run(
        [sys.executable, "-m", "keyplane", "serve"], env=full, capture_output=True, text=True, timeout=60
    )


def _one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_a_data_dir_that_cannot_be_created(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_line(_serve({"KEYPLANE_DATA_DIR": str(blocker / "sub")}), str(blocker / "sub"), "Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_data_dir(tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    _one_line(_serve({"KEYPLANE_DATA_DIR": str(ro)}), str(ro))


def test_a_corrupt_database_file(tmp_path: Path):
    (tmp_path / "keyplane.db").write_bytes(os.urandom(4096))
    _one_line(_serve({"KEYPLANE_DATA_DIR": str(tmp_path)}), str(tmp_path / "keyplane.db"), "not a database")


def test_an_unreachable_postgresql(tmp_path: Path):
    result = _serve({"KEYPLANE_DATA_DIR": str(tmp_path), "KEYPLANE_DATABASE_URL": "postgresql://kp:pw@127.0.0.1:1/x"})
    _one_line(result, "127.0.0.1:1/x", "Connection refused")
    assert "pw" not in result.stderr
