"""The text generation runtime: V2 requests in, streamed text deltas out.

Requests are parsed once at the edge into (prompt ids, GenerationParams); the engine core
runs in its own process (or on a thread: `engine_process: false`) behind one
`EngineClient`. Streamed requests go through `streams.py`: generation appends to a log the
client reads, so it can resume; this module keeps the engine-facing calls and unary predict.
"""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from ..events import ParamValue, final_event, stream_requests
from ..openai.routes import OpenAIRoutes
from ..playground.routes import PlaygroundRoutes
from ..serving import check_streaming_server
from ..settings import parse_extra
from .engine_client import EngineClient, RequestRecord
from .engine_core import EngineSpec
from .event_log import MemoryEventLog
from .generation import Delta
from .loaded import TEXT_GENERATORS
from .metrics import GenerationMetrics
from .model_folder import open_model_folder
from .request import RequestParser, TextRequest
from .responses import delta_outputs, final_parameters, merge
from .settings import TextGenerationSettings
from .stream_routes import StreamRoutes
from .streams import EMPTY_OUTPUTS, Streams


class TextGenerator(OpenAIRoutes, StreamRoutes, PlaygroundRoutes, MLModel):
    """Streams text with continuous batching from a GPT-2-family checkpoint (numpy engine) or
    a GGUF model of any architecture llama.cpp runs."""

    async def load(self) -> bool:
        check_streaming_server(self, streaming_only=True)
        self._extra = parse_extra(self.settings, TextGenerationSettings)
        path = Path(await get_model_uri(self.settings))
        self._folder = folder = open_model_folder(path, self._extra, self.name)
        self._requests = RequestParser.from_settings(self._extra, folder, self.name)
        self.prepare_openai(folder)
        metrics = GenerationMetrics(self.name, self.version)
        spec = EngineSpec(path, self._extra, self.name)
        self._client = await EngineClient.start(spec, metrics)
        extra = self._extra
        log = MemoryEventLog(
            extra.resume_retention_s, extra.resume_max_streams, extra.resume_max_events
        )
        self.streams = Streams(self, log)
        if self._extra.gc_freeze:
            gc.freeze()  # see TextGenerationSettings.gc_freeze
        TEXT_GENERATORS.add(self)  # the global routes find it from now on
        return True

    async def unload(self) -> bool:
        TEXT_GENERATORS.remove(self)
        client = getattr(self, "_client", None)  # None when load failed part-way
        if client is not None:
            await client.stop()
            await self.streams.stop()
        folder = getattr(self, "_folder", None)
        if folder is not None:
            folder.close()  # llama.cpp's vocabulary: freed now, not at process exit
        return True

    @property
    def requests(self) -> RequestParser:
        """Turns prompts and parameters into engine requests, with this model's limits."""
        return self._requests

    def submit(self, request: TextRequest) -> RequestRecord:
        """Start generating (ServerAtCapacity / EngineUnavailable when it cannot)."""
        deadline = time.monotonic() + self._extra.request_timeout_s
        return self._client.submit(request.prompt_ids, request.params, deadline)

    def cancel(self, record: RequestRecord) -> None:
        """Cancel a generation; its last delta says `cancelled`."""
        self._client.cancel(record)

    async def deltas(self, record: RequestRecord, coalesce: bool = True) -> AsyncIterator[Delta]:
        """The deltas of a submitted generation up to its final one (which has a finish
        reason); leaving early (a disconnect) cancels its sequence. `coalesce` merges the
        deltas that wait into one; without it each engine delta comes on its own."""
        queue = record.deltas
        finished = False
        try:
            while not finished:
                # Under load several deltas may wait: send them as one event, not a backlog.
                pending = [await queue.get()]
                while coalesce and pending[-1].finish_reason is None and not queue.empty():
                    pending.append(queue.get_nowait())
                delta = pending[0] if len(pending) == 1 else merge(pending)
                finished = delta.finish_reason is not None
                yield delta
        finally:
            if not finished:
                self._client.cancel(record)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        resumed = await self.streams.predict(payload)  # `resume` / `cancel` of a stream
        if resumed is not None:
            return resumed
        request = self._requests.parse(payload)
        record = self.submit(request)
        whole = merge([delta async for delta in self.deltas(record)])
        return self._final(record, whole, request.params.logprobs, {})

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        return stream_requests(self, payloads, self.streams.stream_one, EMPTY_OUTPUTS)

    def _final(
        self,
        record: RequestRecord,
        delta: Delta,
        logprobs: int | None,
        tags: dict[str, ParamValue],
    ) -> InferenceResponse:
        assert delta.finish_reason is not None
        return final_event(
            self,
            delta.finish_reason,
            delta_outputs(delta, logprobs),
            **final_parameters(record, delta),
            **tags,
        )
