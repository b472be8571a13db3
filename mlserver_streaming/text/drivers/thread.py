"""The in-thread driver: the engine core on a thread of MLServer's process.

`engine_process: false`. Commands cross a thread-safe queue; each step output is handed to
the event loop with `call_soon_threadsafe`. The engine thread and the event loop share the
GIL, so this mode is simpler but slower under load than `drivers/process.py`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

from ..core.engine_core import EngineSpec, Listener, QueueInbox, build_core, run_engine_loop
from ..core.messages import Command, Stop
from ..core.step_output import StepOutput

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class ThreadDriver:
    """Moves commands to the engine thread and its step outputs to the listener on the loop."""

    def __init__(self, inbox: QueueInbox, thread: threading.Thread) -> None:
        self._inbox = inbox
        self._thread = thread

    @classmethod
    async def start(cls, spec: EngineSpec, listener: Listener) -> ThreadDriver:
        """Load and warm up (off the loop), then start the engine thread."""
        switch_ms = spec.settings.gil_switch_interval_ms
        if switch_ms is not None:  # the thread shares the loop's GIL
            sys.setswitchinterval(switch_ms / 1000)
        core = await asyncio.to_thread(build_core, spec)
        loop = asyncio.get_running_loop()

        def publish(out: StepOutput) -> None:
            try:
                loop.call_soon_threadsafe(listener.deliver, out)
            except RuntimeError:  # the event loop is closed: nobody left to tell
                logger.debug("dropped a step output for a closed event loop")

        def run() -> None:
            try:
                run_engine_loop(core, inbox, publish)
            except BaseException as err:  # noqa: BLE001 - in-flight requests must not hang
                logger.exception("the text engine thread failed")
                loop.call_soon_threadsafe(listener.lost, f"the text engine thread failed: {err!r}")

        inbox = QueueInbox()
        thread = threading.Thread(target=run, name="text-engine", daemon=True)
        thread.start()
        return cls(inbox, thread)

    def send(self, command: Command) -> None:
        """Queue a command for the engine thread."""
        self._inbox.put(command)

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the thread; its last output (every request cancelled) reaches the listener."""
        self._inbox.put(Stop())
        await asyncio.to_thread(self._thread.join, timeout)
