"""Replay tokens across restarts, for the in-process gate (one node, no Redis).

The in-process gate keeps its replay tokens in memory. On its own, a restart would forget them and
accept again a signed order the previous process had already placed, for as long as its
recvWindow lasts. This module closes that gap without a write on the request path:

- A **clean stop** writes the gate's live tokens to this process's file under
  ``<data dir>/replay/``; the next start reads them back, so nothing is forgotten.
- An **unclean stop** (a crash, ``kill -9``, a power cut) leaves the file saying "running". The
  next start then cannot know what the dead process accepted, so it sets the gate's
  ``replay_since_s`` to its own start: the pipeline refuses any state-changing request signed
  before that moment plus the dialect's future tolerance (about 1 s), which covers everything the
  dead process could have accepted. Clients see a timestamp error and sign again.

Each server process has its own file (named by its pid). Only one ``keyplane serve`` may run on a
data dir without Redis (:func:`hold_data_dir`, a lock the kernel releases when the process dies):
a second one, started before the first had stopped (a rolling restart on one host), would not
know what the first accepted meanwhile, and could accept the same order again. A Redis gate needs
none of this: Redis keeps the tokens for every node.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from keyplane.auth.gates import MemoryGate
from keyplane.errors import KeyplaneError

log = logging.getLogger("keyplane.auth")

_RUNNING = "running"
_CLEAN = "clean"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a file of ours from a previous process that had the same pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


class DataDirInUse(KeyplaneError):
    code = "data_dir_in_use"
    status = 500


_held: list[int] = []  # the lock's file descriptor, open for the life of the process


def hold_data_dir(data_dir: Path) -> None:
    """Take this data dir's server lock for the life of the process, or raise DataDirInUse if
    another ``keyplane serve`` without Redis holds it (the kernel drops it when that one exits,
    however it exits)."""
    directory = data_dir / "replay"
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(directory / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise DataDirInUse(f"cannot lock the data dir {data_dir}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise DataDirInUse(
            f"another keyplane server (pid {holder}) is running on {data_dir} without Redis: its replay "
            "protection lives in its memory, so a second server here could accept its requests again; "
            "stop it first, or set KEYPLANE_REDIS_URL to run several servers"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
    _held.append(fd)


class ReplayLog:
    """The file that carries one process's replay tokens to the next start."""

    def __init__(self, directory: Path, gate: MemoryGate, clock: Callable[[], float] = time.time) -> None:
        self.dir = directory
        self.gate = gate
        self.clock = clock
        self.path = directory / f"{os.getpid()}-{secrets.token_hex(4)}.json"

    def open(self) -> None:
        """Take over what earlier processes left, then mark this one as running."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        unclean = False
        for path in sorted(self.dir.glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                state, pid = doc["state"], int(doc["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                unclean = True  # unreadable: assume the worst
                path.unlink(missing_ok=True)
                continue
            if state == _RUNNING and _alive(pid):
                continue  # another live process on this data dir
            if state == _CLEAN:
                try:
                    self.gate.restore([(str(t), str(b), float(e)) for t, b, e in doc.get("tokens", [])])
                except (ValueError, TypeError):
                    unclean = True
            else:
                unclean = True
            path.unlink(missing_ok=True)
        if unclean:
            self.gate.replay_since_s = self.clock()
            log.warning(
                "the previous server process stopped uncleanly: requests signed before now are refused "
                "for about a second, since their replay check cannot be made"
            )
        _write(self.path, {"state": _RUNNING, "pid": os.getpid(), "started": self.clock()})

    def close(self) -> None:
        """Hand the live tokens to the next start."""
        with contextlib.suppress(OSError):
            _write(self.path, {"state": _CLEAN, "pid": os.getpid(), "tokens": self.gate.snapshot()})
