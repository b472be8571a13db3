"""A real `redis-server` (Debian's package) on a free 127.0.0.1 port, stopped afterwards."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.server import free_ports, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


def require_redis() -> None:
    """Skip, saying why, where redis-server is not installed (`make test` installs it)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server missing: `make redis` installs it (apt-get install redis-server)")


class RedisServer:
    """One redis-server without persistence: a restart loses everything, as a crash would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_ports(1)[0]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers."""
        require_redis()
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.folder)]
        log_path = self.folder / f"redis-{self.port}.log"
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self.proc.poll() is None:  # ours, not another server that took the port
                    with contextlib.suppress(redis.ConnectionError):
                        if client.info("server")["process_id"] == self.proc.pid:
                            return
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextlib.contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    """A started RedisServer until the block ends."""
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
