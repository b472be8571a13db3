"""Redis mode's parts for tests: real `mlserver-streaming worker` processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .server import free_ports, stop_process

WORKER = str(Path(sys.executable).parent / "mlserver-streaming")
READY_LINE = "serving"
START_TIMEOUT_S = 120.0


@dataclass
class Worker:
    """A running worker: its process, its consumer name and its metrics endpoint."""

    proc: subprocess.Popen
    name: str
    metrics_url: str


def start_worker(folder: Path, url: str, log_dir: Path, name: str) -> Worker:
    """A worker on `folder`'s model, returned once it has joined the consumer group;
    `name` (its consumer name and log file) is new for each start."""
    log_path = log_dir / f"worker-{name}.log"
    (port,) = free_ports(1)
    args = [WORKER, "worker", str(folder), "--redis", url, "--consumer", name]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*args, "--metrics-port", str(port)],
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
    return Worker(proc, name, f"http://127.0.0.1:{port}/metrics")


@contextlib.contextmanager
def running_workers(folder: Path, url: str, log_dir: Path, count: int) -> Iterator[list[Worker]]:
    """`count` workers until the block ends (the list may be changed: kills, restarts)."""
    workers = [start_worker(folder, url, log_dir, f"w{i}") for i in range(count)]
    try:
        yield workers
    finally:
        for worker in workers:
            stop_process(worker.proc)
