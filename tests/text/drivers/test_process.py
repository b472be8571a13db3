"""The engine behind both drivers: deltas, determinism, cancel, capacity, death, metrics.

Every test runs the real shakespeare checkpoint through `EngineClient`, with the engine core
in a spawned process (the default) and, where the behaviour must match, on a thread.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mlserver.metrics import REGISTRY

from mlserver_streaming.errors import InvalidSettings, ServerAtCapacity
from mlserver_streaming.events import FinishReason
from mlserver_streaming.text.core.engine_core import EngineSpec
from mlserver_streaming.text.drivers.client import EngineClient, EngineUnavailable
from mlserver_streaming.text.drivers.metrics import (
    E2E_LATENCY,
    FINISHED,
    GENERATION_TOKENS,
    INTER_TOKEN,
    PROMPT_TOKENS,
    QUEUE_TIME,
    TTFT,
    GenerationMetrics,
)
from mlserver_streaming.text.drivers.process import ProcessDriver
from mlserver_streaming.text.record import RequestRecord
from mlserver_streaming.text.sample.generation import Delta
from mlserver_streaming.text.sample.params import GenerationParams
from mlserver_streaming.text.settings import TextGenerationSettings
from mlserver_streaming.text.tokenizer import HFTokenizer
from tests.e2e.engines import Pause, run_until

SHAKESPEARE = Path(__file__).parents[3] / "model-repo" / "shakespeare"
SETTINGS = TextGenerationSettings(max_running=2, max_waiting=1, warmup_tokens=1)
WAIT_S = 30.0
MODES = ["process", "thread"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def tokenizer() -> HFTokenizer:
    return HFTokenizer.from_file(SHAKESPEARE / "tokenizer.json")


async def start(
    name: str, mode: str = "process", folder: Path = SHAKESPEARE, **settings
) -> EngineClient:
    values = {**SETTINGS.model_dump(), "engine_process": mode == "process", **settings}
    spec = EngineSpec(folder, TextGenerationSettings(**values), name)
    return await EngineClient.start(spec, GenerationMetrics(name, mode))


@pytest.fixture(scope="module")
async def engine() -> AsyncIterator[EngineClient]:
    client = await start("engine-process-test")
    yield client
    await client.stop()


def prompt(tokenizer: HFTokenizer) -> list[int]:
    return tokenizer.encode("ROMEO:")


def params(max_tokens: int = 12, seed: int = 7, **kw) -> GenerationParams:
    return GenerationParams(max_tokens=max_tokens, temperature=0.8, top_k=40, seed=seed, **kw)


async def collect(record: RequestRecord, limit: int = 1000) -> list[Delta]:
    """Deltas until the final one (bounded in time and count)."""
    deltas: list[Delta] = []
    while not deltas or deltas[-1].finish_reason is None:
        deltas.append(await asyncio.wait_for(record.deltas.get(), WAIT_S))
        assert len(deltas) <= limit
    return deltas


async def run(client: EngineClient, ids: list[int], p: GenerationParams) -> list[Delta]:
    return await collect(client.submit(ids, p, time.monotonic() + 60))


def tokens(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


async def test_deltas_arrive_and_end_with_a_finish_reason(engine, tokenizer):
    record = engine.submit(prompt(tokenizer), params(12), time.monotonic() + 60)
    deltas = await collect(record)
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert len(tokens(deltas)) == 12 == record.completion_tokens
    assert record.finish_reason is FinishReason.LENGTH
    assert "".join(d.text for d in deltas)
    assert not engine.inflight


async def test_same_seed_same_tokens_as_the_in_thread_engine(engine, tokenizer):
    in_thread = await start("engine-thread-test", "thread")
    try:
        for seed in (1, 2):
            here = await run(in_thread, prompt(tokenizer), params(16, seed))
            there = await run(engine, prompt(tokenizer), params(16, seed))
            assert tokens(here) == tokens(there)
            assert "".join(d.text for d in here) == "".join(d.text for d in there)
    finally:
        await in_thread.stop()


def paused(client: EngineClient) -> Pause:
    """The client's engine process, to pause and step (a request stays mid-way)."""
    assert isinstance(client.driver, ProcessDriver)
    return Pause([client.driver.process.pid])


async def test_cancel_ends_the_request_as_cancelled(engine, tokenizer):
    with paused(engine).held() as process:  # the request is mid-way when it is cancelled
        record = engine.submit(prompt(tokenizer), params(250), time.monotonic() + 60)
        await run_until(process, lambda: not record.deltas.empty(), "the first delta")
        first = record.deltas.get_nowait()
        engine.cancel(record)
    deltas = [first, *await collect(record)]
    assert deltas[-1].finish_reason is FinishReason.CANCELLED
    assert len(tokens(deltas)) < 250
    assert not engine.inflight


@pytest.mark.parametrize("mode", MODES)
async def test_requests_past_running_plus_waiting_are_refused_alike(tokenizer, mode):
    client = await start(f"capacity-{mode}", mode)
    try:
        deadline = time.monotonic() + 60
        records = [client.submit(prompt(tokenizer), params(250), deadline) for _ in range(3)]
        with pytest.raises(ServerAtCapacity) as info:
            client.submit(prompt(tokenizer), params(), deadline)
        assert str(info.value) == (
            "server at capacity: 1 requests waiting (max_waiting=1, max_running=2); retry later."
        )
        for record in records:
            client.cancel(record)
        for record in records:
            assert (await collect(record))[-1].finish_reason is FinishReason.CANCELLED
    finally:
        await client.stop()


async def test_a_dead_engine_fails_inflight_requests_and_refuses_new_ones(tokenizer):
    client = await start("engine-death-test")
    try:
        record = client.submit(prompt(tokenizer), params(250), time.monotonic() + 60)
        await asyncio.wait_for(record.deltas.get(), WAIT_S)
        driver = client.driver
        assert isinstance(driver, ProcessDriver)
        driver.process.kill()
        last = (await collect(record))[-1]
        assert last.finish_reason is FinishReason.ERROR
        assert "exited unexpectedly (exit code -9)" in (last.error or "")
        with pytest.raises(EngineUnavailable, match="exited unexpectedly"):
            client.submit(prompt(tokenizer), params(), 0.0)
    finally:
        await client.stop()


@pytest.mark.parametrize("mode", MODES)
async def test_stop_cancels_inflight_requests_and_joins(tokenizer, mode):
    client = await start(f"engine-stop-{mode}", mode)
    record = client.submit(prompt(tokenizer), params(250), time.monotonic() + 60)
    if mode == "process":  # held mid-way until Stop is on its way (a thread runs on)
        with paused(client).held() as process:
            await run_until(process, lambda: not record.deltas.empty(), "the first delta")
            stopping = asyncio.ensure_future(client.stop())
            await asyncio.sleep(0)  # Stop is sent
    else:
        await asyncio.wait_for(record.deltas.get(), WAIT_S)
        stopping = asyncio.ensure_future(client.stop())
    await asyncio.wait_for(stopping, WAIT_S)
    assert (await collect(record))[-1].finish_reason is FinishReason.CANCELLED
    if mode == "process":
        assert client.driver.process.exitcode == 0  # type: ignore[union-attr]


async def test_a_broken_checkpoint_fails_the_load_with_a_clear_error(tmp_path):
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(SHAKESPEARE / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidSettings, match="failed to load the model"):
        await start("engine-broken-test", folder=tmp_path)


def metric(name: str, model: str, mode: str, suffix: str = "", **labels: str) -> float:
    labels = {"model_name": model, "model_version": mode, **labels}
    return REGISTRY.get_sample_value(name + suffix, labels) or 0.0


async def seeded_workload(client: EngineClient, tokenizer: HFTokenizer) -> None:
    """Lengths, a stop sequence, a timeout and a cancel, each with its own seed."""
    ids = prompt(tokenizer)
    long_prompt = tokenizer.encode("Now is the winter of our discontent " * 8)
    runs = [
        client.submit(ids, params(10, seed=1, stream_interval=1), time.monotonic() + 60),
        client.submit(long_prompt, params(7, seed=2, stream_interval=1), time.monotonic() + 60),
        client.submit(
            ids, params(40, seed=3, stop=("e",), stream_interval=1), time.monotonic() + 60
        ),
    ]
    expired = client.submit(ids, params(5, seed=4), deadline=0.0)
    cancelled = client.submit(ids, params(5, seed=5), time.monotonic() + 60)
    client.cancel(cancelled)
    results = [await collect(r) for r in [*runs, expired, cancelled]]
    assert [d[-1].finish_reason for d in results] == [
        FinishReason.LENGTH,
        FinishReason.LENGTH,
        FinishReason.STOP,
        FinishReason.TIMEOUT,
        FinishReason.CANCELLED,
    ]


async def test_metrics_mean_the_same_in_thread_and_process_mode(tokenizer):
    model = "metrics-parity"
    for mode in MODES:
        # Three slots: the request cancelled right after its submit waits behind the three
        # runs, so its cancel lands before it is admitted in either mode (no race).
        client = await start(model, mode, max_running=3, max_waiting=4)
        try:
            await seeded_workload(client, tokenizer)
        finally:
            await client.stop()
    counters = [(PROMPT_TOKENS, "_total"), (GENERATION_TOKENS, "_total")]
    histograms = [(h, "_count") for h in (TTFT, INTER_TOKEN, QUEUE_TIME, E2E_LATENCY)]
    values = {
        mode: {name: metric(name, model, mode, suffix) for name, suffix in counters + histograms}
        for mode in MODES
    }
    assert values["thread"] == values["process"]
    assert values["process"][PROMPT_TOKENS] > 0 and values["process"][GENERATION_TOKENS] > 0
    assert values["process"][E2E_LATENCY] == 5
    for reason in ("length", "stop", "timeout", "cancelled"):
        counts = [metric(FINISHED, model, mode, "_total", finished_reason=reason) for mode in MODES]
        assert counts[0] == counts[1] > 0, reason
