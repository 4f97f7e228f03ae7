"""The replay log: tokens handed from one process to the next, and the cut-off after a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from keyplane.auth.gates import MemoryGate
from keyplane.auth.replaylog import ReplayLog
from keyplane.auth.routes import RouteRule
from keyplane.settings import Settings

RULE = RouteRule(None, "binance", 1)


def _gate(tmp_path) -> MemoryGate:
    return MemoryGate(Settings(data_dir=tmp_path))


def test_a_clean_stop_hands_its_tokens_to_the_next_start(tmp_path):
    first = _gate(tmp_path)
    log = ReplayLog(tmp_path / "replay", first, clock=lambda: 1000.0)
    log.open()
    first.admit_now("k", "ip", RULE, "sig", 60.0)
    log.close()
    second = _gate(tmp_path)
    ReplayLog(tmp_path / "replay", second, clock=lambda: 2000.0).open()
    assert second.replay_since_s == 0.0  # nothing was lost: no cut-off
    assert [t for t, _, _ in second.snapshot()] == ["k:sig"]
    files = list((tmp_path / "replay").glob("*.json"))
    assert len(files) == 1  # only the new process's own file
    assert os.stat(tmp_path / "replay").st_mode & 0o777 == 0o700
    assert os.stat(files[0]).st_mode & 0o777 == 0o600


def test_an_unclean_stop_sets_the_cut_off(tmp_path):
    first = _gate(tmp_path)
    ReplayLog(tmp_path / "replay", first).open()  # never closed: the process died
    second = _gate(tmp_path)
    ReplayLog(tmp_path / "replay", second, clock=lambda: 1234.5).open()
    assert second.replay_since_s == 1234.5


def test_a_file_that_does_not_read_counts_as_unclean(tmp_path):
    (tmp_path / "replay").mkdir()
    (tmp_path / "replay" / "1-x.json").write_text("{not json")
    gate = _gate(tmp_path)
    ReplayLog(tmp_path / "replay", gate, clock=lambda: 7.0).open()
    assert gate.replay_since_s == 7.0


def test_a_live_process_on_the_same_data_dir_is_left_alone(tmp_path):
    directory = tmp_path / "replay"
    directory.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        theirs = directory / f"{other.pid}-live.json"
        theirs.write_text(json.dumps({"state": "running", "pid": other.pid}))
        gate = _gate(tmp_path)
        ReplayLog(directory, gate, clock=lambda: 9.0).open()
        assert gate.replay_since_s == 0.0
        assert theirs.exists()
    finally:
        other.communicate(b"")
