"""tritonclient's gRPC calls, in a process of their own: its protos and MLServer's define the
same `inference.*` messages, which one process's protobuf descriptor pool refuses to hold.

python -m tests.e2e.tritonclient_grpc TARGET NAME VERSION IMPLEMENTATION → one JSON line
"""

from __future__ import annotations

import json
import sys

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .triton_cases import CASES, PROTOCOL_KWARGS


def main() -> None:
    target, name, version, implementation = sys.argv[1:5]
    case = CASES[implementation]
    client = grpcclient.InferenceServerClient(target)
    tensor = grpcclient.InferInput(case.input_name, list(case.value.shape), case.datatype)
    tensor.set_data_from_numpy(case.value)
    outputs = [grpcclient.InferRequestedOutput(case.output)]
    ready = client.is_model_ready(name, version)
    result = client.infer(
        name, [tensor], version, outputs=outputs, parameters=case.parameters, **PROTOCOL_KWARGS
    )
    case.check(result.as_numpy(case.output))
    try:
        client.infer(name, [tensor], version, parameters=case.misspelled)
        refused = None
    except InferenceServerException as err:
        refused = err.message()
    print(json.dumps({"ready": ready, "refused": refused}))


if __name__ == "__main__":
    main()
