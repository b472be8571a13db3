"""A dialogue over ONE gRPC bidi stream: each request is a new turn, answered in order.

The next turn is sent only after the previous turn's final event arrived, so a turn can
build on what the model just said.

    python examples/dialogue_grpc_bidi.py
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import mlserver.grpc.dataplane_pb2_grpc as dataplane
from generate_grpc import final_stats, generation_request, text_of

TURNS = ["HAMLET:\nWho's there?\n\nHORATIO:\n", "HAMLET:\nSpeak, I charge thee!\n\nGHOST:\n"]


async def main() -> None:
    target = f"localhost:{os.environ.get('MLSERVER_GRPC_PORT', '8081')}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = dataplane.GRPCInferenceServiceStub(channel)
        turn_done = asyncio.Event()
        transcript = ""

        async def turns():
            nonlocal transcript
            for i, line in enumerate(TURNS):
                transcript += line
                sys.stdout.write(f"\n=== turn {i} ===\n{line}")
                yield generation_request(
                    "shakespeare",
                    transcript,
                    max_tokens=40,
                    temperature="0.8",
                    seed=i,
                    stop='["\\n\\n"]',
                )
                await turn_done.wait()  # stream-stream: next turn after this one's final event
                turn_done.clear()

        async for response in stub.ModelStreamInfer(turns()):
            text = text_of(response)
            transcript += text
            sys.stdout.write(text)
            sys.stdout.flush()
            stats = final_stats(response)
            if stats:
                transcript += "\n\n"
                print(
                    f"\n-- turn {stats['request_index']}: {stats['finish_reason']}, "
                    f"{stats['completion_tokens']} tokens"
                )
                turn_done.set()


if __name__ == "__main__":
    asyncio.run(main())
