"""NVIDIA's tritonclient against every model in model-repo: HTTP (JSON tensors,
`binary_data=False`: MLServer has no binary-tensor extension) and gRPC, unary infer.

The protocol-level request parameters tritonclient adds (`binary_data_output`, `priority`,
`timeout`, `sequence_*`) are accepted; a misspelled model parameter is still refused. The gRPC
client runs in a subprocess (tritonclient_grpc.py says why)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import MODEL_REPO
from .triton_cases import CASES, PROTOCOL_KWARGS, Case, served_models

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).parents[2]
MODELS = served_models(MODEL_REPO)
IDS = [f"{name}-{version}" if version else name for name, version, _ in MODELS]


def http_input(case: Case) -> httpclient.InferInput:
    tensor = httpclient.InferInput(case.input_name, list(case.value.shape), case.datatype)
    tensor.set_data_from_numpy(case.value, binary_data=False)
    return tensor


def test_the_server_has_every_model_of_the_repo_ready_and_each_kind_has_a_case(server):
    # MLServer's index wants a JSON body, which tritonclient's call does not send.
    index = httpx.post(f"{server.http_url}/v2/repository/index", json={}, timeout=30).json()
    ready = sorted((m["name"], m.get("version") or None) for m in index if m["state"] == "READY")
    assert ready == sorted((name, version or None) for name, version, _ in MODELS)
    assert len(ready) >= 5 and {impl for _, _, impl in MODELS} <= set(CASES)


@pytest.mark.parametrize(("name", "version", "implementation"), MODELS, ids=IDS)
def test_http_infer_with_json_tensors(server, name, version, implementation):
    case = CASES[implementation]
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    assert client.is_model_ready(name, version)
    outputs = [httpclient.InferRequestedOutput(case.output, binary_data=False)]
    result = client.infer(
        name, [http_input(case)], version, outputs=outputs, parameters=case.parameters
    )
    case.check(result.as_numpy(case.output))
    # Without outputs tritonclient sends binary_data_output; with PROTOCOL_KWARGS it adds
    # priority, timeout and sequence_*: all accepted, and the answer is JSON.
    result = client.infer(
        name, [http_input(case)], version, parameters=case.parameters, **PROTOCOL_KWARGS
    )
    case.check(result.as_numpy(case.output))
    with pytest.raises(InferenceServerException, match=case.refusal):
        client.infer(name, [http_input(case)], version, parameters=case.misspelled)


@pytest.mark.parametrize(("name", "version", "implementation"), MODELS, ids=IDS)
def test_grpc_infer(server, name, version, implementation):
    command = [sys.executable, "-m", "tests.e2e.tritonclient_grpc", server.grpc_target]
    done = subprocess.run(
        [*command, name, version, implementation],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["ready"] is True
    assert result["refused"] is not None and CASES[implementation].refusal in result["refused"]
