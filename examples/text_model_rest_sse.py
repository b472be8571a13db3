"""MLServer's streaming docs REST client, wrapped into a script (run from examples/).

python examples/text_model_rest_sse.py            # server on localhost:8080
MLSERVER_HTTP_PORT=9000 python examples/text_model_rest_sse.py
"""

import os
from pathlib import Path

import httpx
from httpx_sse import connect_sse
from mlserver import types
from mlserver.codecs import StringCodec

HTTP_PORT = os.environ.get("MLSERVER_HTTP_PORT", "8080")
os.chdir(Path(__file__).parent)

# --- as in the docs ---
inference_request = types.InferenceRequest.parse_file("./generate-request.json")

with httpx.Client() as client:
    with connect_sse(client, "POST", f"http://localhost:{HTTP_PORT}/v2/models/text-model/generate_stream", json=inference_request.dict()) as event_source:
        for sse in event_source.iter_sse():
            response = types.InferenceResponse.parse_raw(sse.data)
            print(StringCodec.decode_output(response.outputs[0]))
