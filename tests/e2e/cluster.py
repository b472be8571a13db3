"""Redis mode's parts for tests: real `mlserver-streaming worker` processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .server import stop_process

WORKER = str(Path(sys.executable).parent / "mlserver-streaming")
READY_LINE = "serving"
START_TIMEOUT_S = 120.0


def start_worker(folder: Path, url: str, log_dir: Path, name: str) -> subprocess.Popen:
    """A worker on `folder`'s model, returned once it has joined the consumer group;
    `name` (its consumer name and log file) is new for each start."""
    log_path = log_dir / f"worker-{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [WORKER, "worker", str(folder), "--redis", url, "--consumer", name],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while READY_LINE not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"worker {name} did not start:\n{log_path.read_text()}")
        time.sleep(0.1)
    return proc


@contextlib.contextmanager
def running_workers(folder: Path, url: str, log_dir: Path, count: int) -> Iterator[list]:
    """`count` workers until the block ends (the list may be changed: kills, restarts)."""
    procs = [start_worker(folder, url, log_dir, f"w{i}") for i in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop_process(proc)
