"""The text generation runtime: V2 requests in, streamed text deltas out.

Requests are parsed once at the edge into (prompt ids, GenerationParams); generation runs
in the engine process (or on an engine thread: `engine_process: false`); this module only
moves deltas between the engine and MLServer's streams, and turns them into V2 events that
follow the stream contract.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from tokenizers import Tokenizer

from ..engine import GPT2Config
from ..errors import InvalidSettings
from ..events import REQUEST_INDEX, each_request, ending_with_error_event, event, final_event
from ..params import request_parameters
from ..settings import parse_extra
from .engine_child import TOKENIZER_FILE
from .engine_process import EngineProcess
from .generation import Delta, Generation
from .metrics import GenerationMetrics
from .params import GenerationParams
from .prompt import PromptLimits, decode_prompt, encode_prompt
from .responses import delta_outputs, final_parameters, merge
from .scheduler import InThreadEngine
from .settings import TextGenerationSettings
from .warmup import ready_scheduler

CONFIG_FILE = "config.json"
REQUIRED_FILES = (CONFIG_FILE, "model.safetensors", TOKENIZER_FILE)

HandleT = TypeVar("HandleT")


class TextEngine(Protocol[HandleT]):
    """What the runtime needs from an engine, whichever mode runs it."""

    def submit(
        self, generation: Generation, deadline: float, queue: asyncio.Queue[Delta]
    ) -> HandleT:
        """Start a generation (or raise, e.g. ServerAtCapacity); its deltas go to `queue`."""
        ...

    def cancel(self, handle: HandleT) -> None:
        """Drop a generation whose client left; its last delta says `cancelled`."""
        ...

    async def stop(self) -> None:
        """Stop the engine; unfinished generations end."""
        ...


class TextGenerator(MLModel):
    """Streams text from a GPT-2-family checkpoint with continuous batching (numpy, no torch)."""

    async def load(self) -> bool:
        self._config = parse_extra(self.settings, TextGenerationSettings)
        folder = await self._model_folder()
        self._tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        config = GPT2Config.from_json(folder / CONFIG_FILE)
        bos = config.bos_token_id if self._config.prepend_bos else None
        self._limits = PromptLimits.from_settings(self._config, config.n_positions, bos)
        GenerationParams.check_defaults(self._config.defaults, self._config.max_tokens_cap)
        self._eos = config.eos_token_id
        self._engine = await self._start_engine(folder)
        if self._config.gc_freeze:
            gc.freeze()  # see TextGenerationSettings.gc_freeze
        return True

    async def _start_engine(self, folder: Path) -> TextEngine[Any]:
        """The engine in its own process (default) or on a thread of this one."""
        metrics = GenerationMetrics(self.name, self.version)
        if self._config.engine_process:
            return await EngineProcess.start(folder, self._config, self._eos, metrics)
        scheduler = await asyncio.to_thread(ready_scheduler, folder, self._config, metrics)
        return InThreadEngine(scheduler, self._config.gil_switch_interval_ms)

    async def unload(self) -> bool:
        engine = getattr(self, "_engine", None)  # None when load failed part-way
        if engine is not None:
            await engine.stop()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        generation = self._parse(payload)
        whole = merge([delta async for delta in self._generate(generation)])
        return self._final(generation, whole)

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        return each_request(payloads, self._stream_request)  # gRPC bidi: each is a new turn

    def _stream_request(
        self, payload: InferenceRequest, index: int
    ) -> AsyncIterator[InferenceResponse]:
        events = self._stream_one(payload, index)
        empty = delta_outputs(Delta(), None)
        return ending_with_error_event(self, events, empty, **{REQUEST_INDEX: index})

    async def _stream_one(
        self, payload: InferenceRequest, index: int
    ) -> AsyncIterator[InferenceResponse]:
        generation = self._parse(payload)
        logprobs = generation.params.logprobs
        async for delta in self._generate(generation):
            if delta.finish_reason is None:
                yield event(self, delta_outputs(delta, logprobs), **{REQUEST_INDEX: index})
            else:
                yield self._final(generation, delta, **{REQUEST_INDEX: index})

    def _parse(self, payload: InferenceRequest) -> Generation:
        prompt = decode_prompt(payload)
        raw = request_parameters(payload)
        params = GenerationParams.from_request(
            raw, self._config.defaults, self._config.max_tokens_cap
        )
        prompt_ids = encode_prompt(self._tokenizer, prompt, self._limits)
        params = self._limits.fit(params, len(prompt_ids), explicit="max_tokens" in raw)
        return Generation(prompt_ids, params, self._tokenizer, self._eos)

    async def _generate(self, generation: Generation) -> AsyncIterator[Delta]:
        """Deltas of one generation; leaving early (a disconnect) cancels its sequence."""
        queue: asyncio.Queue[Delta] = asyncio.Queue()
        deadline = time.monotonic() + self._config.request_timeout_s
        handle = self._engine.submit(generation, deadline, queue)
        finished = False
        try:
            while not finished:
                # Under load several deltas may wait: send them as one event, not a backlog.
                pending = [await queue.get()]
                while pending[-1].finish_reason is None and not queue.empty():
                    pending.append(queue.get_nowait())
                delta = pending[0] if len(pending) == 1 else merge(pending)
                finished = delta.finish_reason is not None
                yield delta
        finally:
            if not finished:
                self._engine.cancel(handle)

    def _final(self, generation: Generation, delta: Delta, **params) -> InferenceResponse:
        assert delta.finish_reason is not None
        return final_event(
            self,
            delta.finish_reason.value,
            delta_outputs(delta, generation.params.logprobs),
            **final_parameters(generation, delta),
            **params,
        )

    async def _model_folder(self) -> Path:
        """The checkpoint folder (`parameters.uri`, relative to model-settings.json)."""
        folder = Path(await get_model_uri(self.settings))
        missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
        if missing:
            raise InvalidSettings(
                f"model {self.name!r}: {folder} must hold {', '.join(REQUIRED_FILES)}; "
                f"missing {', '.join(missing)}."
            )
        return folder
