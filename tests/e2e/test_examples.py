"""Every example client runs as-is against a live server and prints what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(server, name: str, *args: str) -> str:
    """Run an example script with the server's ports in its environment; return stdout."""
    http_port = server.http_url.rsplit(":", 1)[1]
    grpc_port = server.grpc_target.rsplit(":", 1)[1]
    env = {**os.environ, "MLSERVER_HTTP_PORT": http_port, "MLSERVER_GRPC_PORT": grpc_port}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("script", ["text_model_rest_sse.py", "text_model_grpc_stream.py"])
def test_docs_clients_print_word_by_word(server, script):
    lines = run_example(server, script).splitlines()
    assert lines == ["['What']", "[' is']", "[' the']", "[' capital']", "[' of']", "[' France?']"]
