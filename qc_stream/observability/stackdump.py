"""Dump every asyncio task's stack and every thread's stack into the log: what a silent worker is
waiting for. ``kill -USR1 <worker pid>`` (installed by the worker) or called by the stall watchdog.

Faust runs the Kafka consumer on a thread with its own event loop, so tasks are listed per loop.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal
import sys
import threading
import traceback

log = logging.getLogger(__name__)


def _all_tasks() -> list[asyncio.Task]:
    # asyncio.all_tasks() sees one loop only; the module's registry holds the tasks of every loop.
    registry = getattr(asyncio.tasks, "_all_tasks", None)
    if registry is not None:
        for _ in range(3):  # the set may change under us (another thread's loop)
            try:
                return list(registry)
            except RuntimeError:
                continue
    try:
        return list(asyncio.all_tasks())
    except RuntimeError:
        return []


def await_chain(coro) -> list[str]:
    """Where a coroutine is suspended, outermost first, down the chain of awaits (``print_stack``
    shows the outermost frame only); the last line names what the innermost one waits on."""
    lines: list[str] = []
    seen: set[int] = set()
    while coro is not None and id(coro) not in seen:
        seen.add(id(coro))
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        frame = frame or getattr(coro, "gi_frame", None)
        if frame is None:
            lines.append(f"   awaiting {coro!r}\n"[:400])
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}\n')
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "ag_await", None)
            or getattr(coro, "gi_yieldfrom", None)
        )
    return lines


def format_stacks() -> str:
    """Every pending task (grouped by its loop's thread) and every thread, as text."""
    out = io.StringIO()
    threads = {t.ident: t.name for t in threading.enumerate()}
    loops: dict[int, list[asyncio.Task]] = {}
    for task in _all_tasks():
        if not task.done():
            loops.setdefault(id(task.get_loop()), []).append(task)
    for tasks in loops.values():
        out.write(f"== event loop {tasks[0].get_loop()!r}: {len(tasks)} pending task(s)\n")
        for task in sorted(tasks, key=lambda t: t.get_name()):
            out.write(f"-- task {task.get_name()}\n")
            out.write("".join(await_chain(task.get_coro())))
    for ident, frame in sys._current_frames().items():
        out.write(f"== thread {threads.get(ident, '?')} ({ident})\n")
        out.write("".join(traceback.format_stack(frame)))
    return out.getvalue()


def log_stacks(why: str) -> None:
    log.warning("stack dump (%s):\n%s", why, format_stacks())


def install(sig: int = signal.SIGUSR1) -> None:
    """``kill -USR1 <pid>`` logs the dump (from the main thread, between two bytecodes)."""
    signal.signal(sig, lambda signum, frame: log_stacks(f"signal {signal.Signals(signum).name}"))
