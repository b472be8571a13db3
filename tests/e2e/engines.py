"""Holding generation still: a test pauses a server's text engine processes (SIGSTOP) and
resumes them (SIGCONT), so "a stream is still running" or "the engine is busy" is a state
the test controls instead of a race against the machine's speed.

A text generator's engine core runs in a spawned child of the server (`engine_process.py`);
while it is stopped the server itself keeps answering: it admits or refuses requests
(capacity is counted in the server), writes keep-alives, sees disconnects and queues
commands to the engine, which handles them once resumed. A Redis-mode worker is paused as
its whole process group (the worker and its engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

SPAWNED = b"multiprocessing.spawn"  # how a spawned child's command line starts it


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def engine_pids(server_pid: int) -> list[int]:
    """The text engine processes of a running server (one per text generator version)."""
    pending, engines = [server_pid], []
    while pending:
        pid = pending.pop()
        for child in _children(pid):
            with contextlib.suppress(OSError):
                if SPAWNED in Path(f"/proc/{child}/cmdline").read_bytes():
                    engines.append(child)
            pending.append(child)
    return engines


class Pause:
    """Stops and continues processes (or whole process groups)."""

    def __init__(self, pids: list[int], groups: bool = False) -> None:
        assert pids, "no process to pause"
        self.pids = pids
        self._kill: Callable[[int, int], None] = os.killpg if groups else os.kill

    @classmethod
    def engines_of(cls, server) -> Pause:
        """Every text engine of a running `Server` (all its text generators)."""
        return cls(engine_pids(server.pid))

    def pause(self) -> None:
        for pid in self.pids:
            self._kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                self._kill(pid, signal.SIGCONT)

    def step(self, seconds: float = 0.002) -> None:
        """Let the processes run for about `seconds` (a token or a few), then stop them."""
        self.resume()
        time.sleep(seconds)
        self.pause()

    @contextlib.contextmanager
    def held(self) -> Iterator[Pause]:
        """Paused inside the block, running again after it (whatever happens)."""
        self.pause()
        try:
            yield self
        finally:
            self.resume()


WAIT_S = 60.0


async def holds(condition: Callable[[], object]) -> bool:
    """`condition()`, awaited if it is a coroutine."""
    value = condition()
    if inspect.isawaitable(value):
        value = await value
    return bool(value)


async def run_until(
    paused: Pause, condition: Callable[[], object], what: str, step_s: float = 0.002
) -> None:
    """Let paused processes run `step_s` at a time until `condition()` (maybe async) holds,
    and leave them paused: they can only have gone a step or so past what `condition` saw
    (a stream is then a few tokens past it, however fast or slow the machine)."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not await holds(condition):
                # Blocking, not awaited: no other task of this loop (a client parsing what
                # came) can stretch the step while the processes run.
                paused.step(step_s)
                await asyncio.sleep(0.02)  # what they produced reaches the client meanwhile
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_S} s: {what}") from None
