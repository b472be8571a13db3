"""The engine process: deltas, determinism against the in-thread mode, cancel, capacity, death."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from mlserver_streaming.errors import InvalidSettings, ServerAtCapacity
from mlserver_streaming.text.engine_process import EngineProcess, EngineUnavailable
from mlserver_streaming.text.generation import Delta, Generation
from mlserver_streaming.text.metrics import GenerationMetrics
from mlserver_streaming.text.params import GenerationParams
from mlserver_streaming.text.scheduler import InThreadEngine
from mlserver_streaming.text.settings import TextGenerationSettings
from mlserver_streaming.text.stopping import FinishReason
from mlserver_streaming.text.warmup import ready_scheduler

SHAKESPEARE = Path(__file__).parents[1] / "model-repo" / "shakespeare"
EOS = 0  # any id: these tests read tokens, not where the model would stop
SETTINGS = TextGenerationSettings(max_running=2, max_waiting=1, warmup_tokens=1)
START_S = 60.0
WAIT_S = 10.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(SHAKESPEARE / "tokenizer.json"))


@pytest.fixture(scope="module")
def metrics() -> GenerationMetrics:
    return GenerationMetrics("engine-process-test", "v1")


async def start(metrics: GenerationMetrics, folder: Path = SHAKESPEARE) -> EngineProcess:
    return await EngineProcess.start(folder, SETTINGS, EOS, metrics, timeout=START_S)


@pytest.fixture(scope="module")
async def engine(metrics) -> AsyncIterator[EngineProcess]:
    client = await start(metrics)
    yield client
    await client.stop()


def generation(tokenizer: Tokenizer, max_tokens: int = 12, seed: int = 7) -> Generation:
    params = GenerationParams(max_tokens=max_tokens, temperature=0.8, top_k=40, seed=seed)
    return Generation(tokenizer.encode("ROMEO:").ids, params, tokenizer, EOS)


async def collect(queue: asyncio.Queue[Delta], limit: int = 1000) -> list[Delta]:
    """Deltas until the final one (bounded in time and count)."""
    deltas: list[Delta] = []
    while not deltas or deltas[-1].finish_reason is None:
        deltas.append(await asyncio.wait_for(queue.get(), WAIT_S))
        assert len(deltas) <= limit
    return deltas


async def run(engine, gen: Generation) -> list[Delta]:
    queue: asyncio.Queue[Delta] = asyncio.Queue()
    engine.submit(gen, time.monotonic() + 60, queue)
    return await collect(queue)


def tokens(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


async def test_deltas_arrive_and_end_with_a_finish_reason(engine, tokenizer):
    gen = generation(tokenizer, max_tokens=12)
    deltas = await run(engine, gen)
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert len(tokens(deltas)) == 12 == gen.completion_tokens
    assert "".join(d.text for d in deltas)
    assert not engine.inflight


async def test_same_seed_same_tokens_as_the_in_thread_engine(engine, tokenizer, metrics):
    scheduler = await asyncio.to_thread(ready_scheduler, SHAKESPEARE, SETTINGS, metrics)
    in_thread = InThreadEngine(scheduler, None)
    try:
        for seed in (1, 2):
            here = await run(in_thread, generation(tokenizer, 16, seed))
            there = await run(engine, generation(tokenizer, 16, seed))
            assert tokens(here) == tokens(there)
            assert "".join(d.text for d in here) == "".join(d.text for d in there)
    finally:
        await in_thread.stop()


async def test_cancel_ends_the_request_as_cancelled(engine, tokenizer):
    queue: asyncio.Queue[Delta] = asyncio.Queue()
    handle = engine.submit(generation(tokenizer, 250), time.monotonic() + 60, queue)
    first = await asyncio.wait_for(queue.get(), WAIT_S)
    engine.cancel(handle)
    deltas = [first, *await collect(queue)]
    assert deltas[-1].finish_reason is FinishReason.CANCELLED
    assert len(tokens(deltas)) < 250
    assert not engine.inflight


async def test_requests_past_running_plus_waiting_are_refused(engine, tokenizer):
    queues = [asyncio.Queue() for _ in range(3)]
    deadline = time.monotonic() + 60
    handles = [engine.submit(generation(tokenizer, 250), deadline, q) for q in queues]
    with pytest.raises(ServerAtCapacity, match=r"server at capacity: 1 requests waiting"):
        engine.submit(generation(tokenizer), deadline, asyncio.Queue())
    for handle in handles:
        engine.cancel(handle)
    for queue in queues:
        assert (await collect(queue))[-1].finish_reason is FinishReason.CANCELLED


async def test_a_dead_engine_fails_inflight_requests_and_refuses_new_ones(tokenizer, metrics):
    client = await start(metrics)
    try:
        queue: asyncio.Queue[Delta] = asyncio.Queue()
        client.submit(generation(tokenizer, 250), time.monotonic() + 60, queue)
        await asyncio.wait_for(queue.get(), WAIT_S)
        client.process.kill()
        last = (await collect(queue))[-1]
        assert last.finish_reason is FinishReason.ERROR
        assert "exited unexpectedly (exit code -9)" in (last.error or "")
        with pytest.raises(EngineUnavailable, match="exited unexpectedly"):
            client.submit(generation(tokenizer), 0.0, asyncio.Queue())
    finally:
        await client.stop()


async def test_stop_cancels_inflight_requests_and_joins(tokenizer, metrics):
    client = await start(metrics)
    queue: asyncio.Queue[Delta] = asyncio.Queue()
    client.submit(generation(tokenizer, 250), time.monotonic() + 60, queue)
    await asyncio.wait_for(queue.get(), WAIT_S)
    await asyncio.wait_for(client.stop(), WAIT_S)
    assert (await collect(queue))[-1].finish_reason is FinishReason.CANCELLED
    assert client.process.exitcode == 0


async def test_a_broken_checkpoint_fails_the_load_with_a_clear_error(tmp_path, metrics):
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(SHAKESPEARE / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidSettings, match="failed to load the model"):
        await start(metrics, tmp_path)
