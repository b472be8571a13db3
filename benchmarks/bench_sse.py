"""What a keep-alive costs per SSE event: `sse.with_keepalive` against the bare stream and
against the helper it replaced in the stream routes (a task per event, `asyncio.wait`).

    python benchmarks/bench_sse.py --events 20000 --repeats 7

Each side reads the same generator of N ready events (every event already produced, as
under load, when the wrapper's own cost shows most) on uvloop, as MLServer runs; the table
gives the median µs per event over the repeats, interleaved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

import uvloop

from mlserver_streaming.sse import KEEPALIVE, with_keepalive

Wrapper = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]


async def events(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        yield b"data: %d\n\n" % i
        await asyncio.sleep(0)  # a real source awaits its log between events


async def bare(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for line in lines:
        yield line


async def task_per_event(lines: AsyncIterator[bytes], every: float = 15.0) -> AsyncIterator[bytes]:
    """The stream routes' keep-alive before `sse.py` (f05a9f4, text/stream_routes.py)."""
    pending = asyncio.ensure_future(anext(lines))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield KEEPALIVE
                continue
            try:
                line = pending.result()
            except StopAsyncIteration:
                return
            yield line
            pending = asyncio.ensure_future(anext(lines))
    finally:
        pending.cancel()


async def per_event_us(wrapper: Wrapper, n: int) -> float:
    start = time.perf_counter()
    count = 0
    async for _ in wrapper(events(n)):
        count += 1
    assert count == n
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sides: dict[str, Wrapper] = {
        "bare stream": bare,
        "sse.with_keepalive": lambda lines: with_keepalive(lines, 15.0),
        "task per event (before)": task_per_event,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}

    async def run() -> None:
        for _ in range(args.repeats):
            for name, wrapper in sides.items():
                times[name].append(await per_event_us(wrapper, args.events))

    uvloop.run(run())
    base = statistics.median(times["bare stream"])
    print(f"| wrapper | µs per event (median of {args.repeats}) | added to the bare stream |")
    print("|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median - base:+.1f} |")


if __name__ == "__main__":
    main()
