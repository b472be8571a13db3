"""Start a real `mlserver start` on free 127.0.0.1 ports and stop it afterwards."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

MLSERVER = str(Path(sys.executable).parent / "mlserver")
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Server:
    """Addresses of a running server and the file its log goes to."""

    http_url: str
    grpc_target: str
    metrics_url: str
    log_path: Path
    pid: int | None = None
    """The server's process id, once started."""

    def log(self) -> str:
        """The server's output so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")


def free_ports(count: int) -> list[int]:
    """Ports the OS says are free right now on 127.0.0.1."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_ready(server: Server, proc: subprocess.Popen, models: Sequence[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    paths = ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in models]
    with httpx.Client(base_url=server.http_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"mlserver exited with {proc.returncode}:\n{server.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if all(client.get(p).status_code == 200 for p in paths):
                    return
            time.sleep(0.25)
    raise TimeoutError(f"mlserver not ready after {START_TIMEOUT_S}s:\n{server.log()}")


@contextlib.contextmanager
def running_server(
    repo: Path, models: Sequence[str], log_dir: Path, **env_vars: str
) -> Iterator[Server]:
    """Serve `repo` (a folder with settings.json and model folders) until the block ends,
    with `env_vars` added to its environment."""
    http_port, grpc_port, metrics_port = free_ports(3)
    env = {
        **os.environ,
        **env_vars,
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(grpc_port),
        "MLSERVER_METRICS_PORT": str(metrics_port),
    }
    log_path = log_dir / f"mlserver-{http_port}.log"
    server = Server(
        http_url=f"http://127.0.0.1:{http_port}",
        grpc_target=f"127.0.0.1:{grpc_port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        log_path=log_path,
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [MLSERVER, "start", str(repo)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(server, proc, models)
            yield dataclasses.replace(server, pid=proc.pid)
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited within 15 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
