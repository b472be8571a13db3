"""MLServer's streaming docs gRPC client, wrapped into a script (run from examples/).

One change from the docs: `.data.__root__` became `.data.root`, because MLServer 1.7
uses pydantic 2, where root models expose `.root`.

    python examples/text_model_grpc_stream.py          # server on localhost:8081
"""

import asyncio
import os
from pathlib import Path

import grpc
import mlserver.grpc.converters as converters
import mlserver.grpc.dataplane_pb2_grpc as dataplane
import mlserver.types as types
from mlserver.codecs import StringCodec
from mlserver.grpc.converters import ModelInferResponseConverter

GRPC_PORT = os.environ.get("MLSERVER_GRPC_PORT", "8081")
os.chdir(Path(__file__).parent)

# --- as in the docs ---
inference_request = types.InferenceRequest.parse_file("./generate-request.json")

# need to convert from string to bytes for grpc
inference_request.inputs[0] = StringCodec.encode_input(
    "prompt", inference_request.inputs[0].data.root
)
inference_request_g = converters.ModelInferRequestConverter.from_types(
    inference_request, model_name="text-model", model_version=None
)


async def get_inference_request_stream(inference_request):
    yield inference_request


async def main():
    async with grpc.aio.insecure_channel(f"localhost:{GRPC_PORT}") as grpc_channel:
        grpc_stub = dataplane.GRPCInferenceServiceStub(grpc_channel)
        inference_request_stream = get_inference_request_stream(inference_request_g)

        async for response in grpc_stub.ModelStreamInfer(inference_request_stream):
            response = ModelInferResponseConverter.to_types(response)
            print(StringCodec.decode_output(response.outputs[0]))


if __name__ == "__main__":
    asyncio.run(main())
