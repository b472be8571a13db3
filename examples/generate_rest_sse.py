"""Stream a Shakespeare completion over REST SSE, printing text as it arrives.

python examples/generate_rest_sse.py "ROMEO:" --max-tokens 60 --temperature 0.8 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx
from httpx_sse import connect_sse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prompt", nargs="?", default="ROMEO:\n")
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stop", action="append", default=None, help="may repeat")
    args = parser.parse_args()

    params = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    if args.seed is not None:
        params["seed"] = args.seed
    if args.stop:
        params["stop"] = args.stop
    body = {
        "inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": [args.prompt]}],
        "parameters": params,
    }
    port = os.environ.get("MLSERVER_HTTP_PORT", "8080")
    url = f"http://localhost:{port}/v2/models/{args.model}/generate_stream"

    sys.stdout.write(args.prompt)
    with httpx.Client(timeout=120) as client, connect_sse(client, "POST", url, json=body) as source:
        for sse in source.iter_sse():
            event = json.loads(sse.data)
            text = next(o["data"][0] for o in event["outputs"] if o["name"] == "text")
            sys.stdout.write(text)
            sys.stdout.flush()
            final = event.get("parameters", {})
            if final.get("final"):
                print()
                stats = {
                    k: final[k]
                    for k in (
                        "finish_reason",
                        "prompt_tokens",
                        "completion_tokens",
                        "seed",
                        "error",
                    )
                    if k in final
                }
                print(f"-- {stats}")


if __name__ == "__main__":
    main()
