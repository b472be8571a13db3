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


@pytest.mark.parametrize("script", ["generate_rest_sse.py", "generate_grpc.py"])
def test_generation_clients_print_the_completion_and_final_stats(server, script):
    out = run_example(server, script, "ROMEO:", "--max-tokens", "12", "--seed", "3")
    assert out.startswith("ROMEO:")
    stats = out.strip().splitlines()[-1]
    assert stats.startswith("-- {") and "'completion_tokens': " in stats
    assert "'finish_reason': 'length'" in stats or "'finish_reason': 'eos'" in stats


def test_generation_clients_agree_for_the_same_seed(server):
    args = ("KING:", "--max-tokens", "12", "--seed", "8", "--temperature", "0.9")
    assert run_example(server, "generate_rest_sse.py", *args) == run_example(
        server, "generate_grpc.py", *args
    )


def test_dialogue_runs_two_turns_on_one_bidi_stream(server):
    out = run_example(server, "dialogue_grpc_bidi.py")
    assert "=== turn 0 ===" in out and "=== turn 1 ===" in out
    assert "-- turn 0: " in out and "-- turn 1: " in out
    assert out.index("-- turn 0: ") < out.index("=== turn 1 ===")
