"""Chat with Shakespeare through the `openai` SDK, printing the reply as it streams.

The conversation is written as a play script by the model's chat template; the reply is the
next speaker's speech, cut at the blank line that ends it (`stop`).

python examples/openai_chat_stream.py "Who's there?" --name BERNARDO --seed 3
"""

from __future__ import annotations

import argparse
import os

from openai import OpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message", nargs="?", default="Who's there?")
    parser.add_argument("--name", default=None, help="the speaker's name (default: HAMLET)")
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()

    port = os.environ.get("MLSERVER_HTTP_PORT", "8080")
    client = OpenAI(base_url=f"http://localhost:{port}/v1", api_key="not-needed")
    message = {"role": "user", "content": args.message}
    if args.name:
        message["name"] = args.name
    stream = client.chat.completions.create(
        model=args.model,
        messages=[message],  # type: ignore[list-item]
        max_completion_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        stop=["\n\n"],
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            choice = chunk.choices[0]
            print(choice.delta.content or "", end="", flush=True)
            if choice.finish_reason:
                print(f"\n-- finish_reason: {choice.finish_reason}")
        elif chunk.usage:
            print(f"-- usage: {chunk.usage.model_dump()}")


if __name__ == "__main__":
    main()
