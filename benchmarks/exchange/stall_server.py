"""``keyplane serve`` with an event-loop stall monitor, for ``benchmarks.exchange.loop_stall``.

    KP_STALL_OUT=FILE [KP_STALL_SWEEP_S=2 KP_STALL_WATCHDOG_MS=4] python -m benchmarks.exchange.stall_server

Runs ``keyplane.commands.serve.serve`` itself (settings from the environment, as ``keyplane serve``
reads them), with three things changed, none of them in ``src/``:

- ``uvicorn.run`` becomes the same ``uvicorn.Server`` on the same kind of loop, next to a monitor
  coroutine on that loop: it sleeps 1 ms, again and again, and records how late each wake-up is,
  with the wall-clock time (so the load generator can cut out its own window), and the CPU time
  and run-queue wait over the interval of the loop's thread and of the exchange writer thread
  (``/proc/self/task/<tid>/schedstat``);
- the expiry sweep runs every ``KP_STALL_SWEEP_S`` seconds instead of every minute, and every
  sweep, last-used flush and key-change poll is timed (start and end, wall clock), and so is every
  collection of the garbage collector's oldest generation, so stalls can be set against them;
- with ``KP_STALL_WATCHDOG_MS`` > 0, a watchdog thread notes where the loop's thread was (its stack,
  and the other threads' innermost frames) whenever the monitor is that late: which code a stall
  sat in. It takes the GIL now and then itself, so runs that measure leave it off;
- ``gc.freeze()`` once the app is built, as ``keyplane serve`` does (``KP_STALL_GC_FREEZE=0``: not).

On SIGTERM uvicorn stops as usual, and the recorded samples are written to ``KP_STALL_OUT`` (JSON).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from array import array
from pathlib import Path
from typing import Any

import uvicorn

import keyplane.api.app as app_module
from benchmarks.auth.compat import key_records

TICK_S = 0.001
EVENTS: list[tuple[str, float, float]] = []  # (what, wall start, wall end)
CAPTURES: list[dict[str, Any]] = []
_beat: list[float] = [time.perf_counter(), 0.0]  # last monitor wake-up (perf_counter), and its number


def _timed(name: str, fn: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            EVENTS.append((name, t0, time.time()))

    return run


def _time_gc() -> None:
    """Note every garbage collection of the oldest generation (start, end), from ``gc.callbacks``."""
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[:] = [time.time()]
        elif started:
            EVENTS.append(("gc2", started[0], time.time()))

    gc.callbacks.append(on_gc)


def _patch_create_app() -> None:
    original = app_module.create_app

    def create_app(settings: Any = None, services: Any = None) -> Any:
        records = key_records(services)
        records.sweep = _timed("sweep", records.sweep)
        records.record_usage = _timed("usage_flush", records.record_usage)
        records.changed_since = _timed("key_poll", records.changed_since)
        return original(settings, services)

    app_module.create_app = create_app  # type: ignore[assignment]
    app_module._SWEEP_INTERVAL_S = float(os.environ.get("KP_STALL_SWEEP_S", "60"))  # type: ignore[attr-defined]


def _schedstat(native_id: int) -> int:
    return os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)


def _read(fd: int) -> tuple[int, int]:
    """A thread's nanoseconds on a CPU, and runnable but waiting for one."""
    on_cpu, waiting, _ = os.pread(fd, 128, 0).split()
    return int(on_cpu), int(waiting)


async def _monitor(wall: array[float], late: array[float], stats: dict[str, array[float]]) -> None:
    """Sleep 1 ms, again and again; record how late each wake-up is (``perf_counter``: uvloop's
    clock counts whole milliseconds), and what the loop's thread and the exchange writer thread
    did meanwhile, from the kernel's schedstat for each: time on a CPU, and time runnable but
    waiting for one (the machine was busy). The rest of a stall the loop's thread was blocked: on
    the GIL (held by a thread that may itself be waiting for a CPU), or in a blocking call."""
    loop_fd = _schedstat(threading.get_native_id())
    writer_fd: int | None = None
    zero = (0, 0)
    try:
        while True:
            if writer_fd is None:
                for t in threading.enumerate():
                    if t.name.startswith("keyplane-writer") and t.native_id is not None:
                        writer_fd = _schedstat(t.native_id)
            t0, (c0, q0) = time.perf_counter(), _read(loop_fd)
            w0 = zero if writer_fd is None else _read(writer_fd)
            await asyncio.sleep(TICK_S)
            t1, (c1, q1) = time.perf_counter(), _read(loop_fd)
            w1 = zero if writer_fd is None else _read(writer_fd)
            _beat[0], _beat[1] = t1, _beat[1] + 1
            wall.append(time.time())
            late.append(t1 - t0 - TICK_S)
            stats["cpu"].append((c1 - c0) / 1e9)
            stats["runq"].append((q1 - q0) / 1e9)
            stats["writer_cpu"].append((w1[0] - w0[0]) / 1e9 if w0 is not zero else 0.0)
            stats["writer_runq"].append((w1[1] - w0[1]) / 1e9 if w0 is not zero else 0.0)
    finally:
        for fd in (loop_fd, writer_fd):
            if fd is not None:
                os.close(fd)


def _frames(frame: Any, limit: int = 12) -> list[str]:
    return [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack(frame)[-limit:]]


def _watchdog(loop_thread: int, threshold_s: float, stop: threading.Event) -> None:
    captured = -1.0
    while not stop.wait(TICK_S):
        beat_t, beat_n = _beat
        gap = time.perf_counter() - beat_t
        if gap < threshold_s or beat_n == captured or len(CAPTURES) >= 200:
            continue
        captured = beat_n
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        CAPTURES.append(
            {
                "wall": time.time(),
                "gap_ms": round(gap * 1e3, 2),
                "loop": _frames(frames.get(loop_thread)),
                "others": {
                    names.get(tid, str(tid)): _frames(f, 3)
                    for tid, f in frames.items()
                    if tid not in (loop_thread, threading.get_ident())
                },
            }
        )


def _run(app: Any, **kwargs: Any) -> None:
    """``uvicorn.run(app, ...)`` for an app object, with the monitor on the server's loop."""
    config = uvicorn.Config(app, **kwargs)
    server = uvicorn.Server(config)
    wall: array[float] = array("d")
    late: array[float] = array("d")
    stats = {name: array("d") for name in ("cpu", "runq", "writer_cpu", "writer_runq")}
    stop = threading.Event()
    threshold_ms = float(os.environ.get("KP_STALL_WATCHDOG_MS", "0"))
    loop_kind: list[str] = []

    async def main() -> None:
        loop_kind.append(type(asyncio.get_running_loop()).__name__)
        mon = asyncio.create_task(_monitor(wall, late, stats))
        if threshold_ms > 0:
            threading.Thread(
                target=_watchdog, args=(threading.get_ident(), threshold_ms / 1e3, stop), daemon=True
            ).start()
        try:
            await server.serve()
        finally:
            stop.set()
            mon.cancel()

    # uvicorn re-raises the signal that stopped it once it has restored the handlers it found:
    # with these, that lands here and the samples below still get written.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if os.environ.get("KP_STALL_GC_FREEZE") != "0":
        # As ``keyplane serve`` does: everything built so far (modules, app, services) out of the
        # collector's reach, so that a full collection under load walks only what requests left.
        gc.collect()
        gc.freeze()
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(main())
    doc = {
        "loop": loop_kind[0] if loop_kind else None,
        "switch_interval_s": sys.getswitchinterval(),
        "tick_s": TICK_S,
        "wall": list(wall),
        "late": list(late),
        **{name: list(values) for name, values in stats.items()},
        "events": EVENTS,
        "captures": CAPTURES,
    }
    Path(os.environ["KP_STALL_OUT"]).write_text(json.dumps(doc))


def main() -> None:
    from keyplane.commands.serve import serve

    _patch_create_app()
    _time_gc()
    uvicorn.run = _run  # type: ignore[assignment]
    serve(host=None, port=None)


if __name__ == "__main__":
    main()
