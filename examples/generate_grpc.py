"""Stream a completion over gRPC ModelStreamInfer, printing text as it arrives.

Generation parameters travel as gRPC InferParameter values, which hold only bool, int64
and string: floats (temperature, top_p) are sent as strings, and a list of stop sequences
as a JSON array in a string.

    python examples/generate_grpc.py "JULIET:" --max-tokens 60 --temperature 0.8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import grpc
import mlserver.grpc.dataplane_pb2 as pb
import mlserver.grpc.dataplane_pb2_grpc as dataplane


def generation_request(model: str, prompt: str, **params: str | int) -> pb.ModelInferRequest:
    """A ModelInferRequest with one BYTES prompt and string/int parameters."""
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(prompt.encode())
    for key, value in params.items():
        if isinstance(value, int):
            request.parameters[key].int64_param = value
        else:
            request.parameters[key].string_param = value
    return request


def text_of(response: pb.ModelInferResponse) -> str:
    """The `text` output of one event."""
    for output in response.outputs:
        if output.name == "text":
            return output.contents.bytes_contents[0].decode()
    return ""


def final_stats(response: pb.ModelInferResponse) -> dict[str, object] | None:
    """The final event's parameters, or None for other events."""
    params = {
        k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in response.parameters.items()
    }
    return params if params.get("final") else None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prompt", nargs="?", default="JULIET:\n")
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--temperature", default="0.8")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    params: dict[str, str | int] = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.seed is not None:
        params["seed"] = args.seed
    target = f"localhost:{os.environ.get('MLSERVER_GRPC_PORT', '8081')}"

    async def requests():
        yield generation_request(args.model, args.prompt, **params)

    sys.stdout.write(args.prompt)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        async for response in stub.ModelStreamInfer(requests()):
            sys.stdout.write(text_of(response))
            sys.stdout.flush()
            stats = final_stats(response)
            if stats:
                keys = ("finish_reason", "prompt_tokens", "completion_tokens", "seed", "error")
                print(f"\n-- { {k: stats[k] for k in keys if k in stats} }")


if __name__ == "__main__":
    asyncio.run(main())
