"""Stream rows into one gRPC call and print each prediction as soon as it comes back.

    python examples/classifier_grpc_bidi.py  # server on 127.0.0.1:8081 (MLSERVER_GRPC_PORT)

A sender writes one request per row (as if they arrived from a sensor, one every 50 ms)
while a reader prints the answers on the same ModelStreamInfer call: true stream-stream.
Every answer carries `request_index`, the 0-based position of its request in the stream
(MLServer gives every response of a stream the first request's id).
"""

import asyncio
import os

import grpc
import mlserver.grpc.dataplane_pb2 as pb
import mlserver.grpc.dataplane_pb2_grpc as dataplane
from mlserver.codecs import StringCodec
from mlserver.grpc.converters import ModelInferResponseConverter
from sklearn.datasets import load_breast_cancer

GRPC_PORT = os.environ.get("MLSERVER_GRPC_PORT", "8081")
FIRST, COUNT = 16, 8  # dataset rows 16-23: a mix of malignant and benign


def row_request(row) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tumor-classifier")
    tensor = request.inputs.add(name="features", datatype="FP64", shape=[1, len(row)])
    tensor.contents.fp64_contents.extend(row.tolist())
    return request


async def send(call, rows) -> None:
    for row in rows:
        await call.write(row_request(row))
        await asyncio.sleep(0.05)
    await call.done_writing()


async def main() -> None:
    data = load_breast_cancer()
    rows = data.data[FIRST : FIRST + COUNT]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
        call = dataplane.GRPCInferenceServiceStub(channel).ModelStreamInfer()
        sender = asyncio.create_task(send(call, rows))
        async for reply in call:
            response = ModelInferResponseConverter.to_types(reply)
            params = response.parameters.model_dump()
            outputs = {o.name: o for o in response.outputs}
            label = StringCodec.decode_output(outputs["label"])[0]
            confidence = outputs["confidence"].data[0]
            index = FIRST + params["request_index"]
            truth = data.target_names[data.target[index]]
            print(
                f"row {index}: {label} (confidence {confidence:.3f}), diagnosed {truth} "
                f"[version {response.model_version}]"
            )
        await sender


if __name__ == "__main__":
    asyncio.run(main())
