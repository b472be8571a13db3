"""The text generation runtime: V2 requests in, streamed text deltas out.

Requests are parsed once at the edge into (prompt ids, GenerationParams) and generated on
the model's backend: this server's engine core (`streams/local.py`: in its own process, or
on a thread with `engine_process: false`) or, with a Redis URL, the generation workers
(`redis/backend.py`). Streamed requests go through `streams/streams.py`: generation appends to a
log the client reads, so it can resume; this module keeps the calls and unary predict.
"""

from __future__ import annotations

import gc
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
from .core.engine_core import EngineSpec
from .drivers.client import EngineClient
from .drivers.metrics import GenerationMetrics
from .loaded import TEXT_GENERATORS
from .model_folder import open_model_folder
from .record import RequestRecord, read_deltas
from .redis.backend import RedisBackend, redis_url
from .request import RequestParser, TextRequest
from .responses import delta_outputs, final_parameters
from .sample.generation import Delta, merge
from .settings import TextGenerationSettings
from .streams.event_log import MemoryEventLog
from .streams.local import LocalBackend
from .streams.routes import StreamRoutes
from .streams.streams import EMPTY_OUTPUTS, Backend, Streams


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
        self.backend = await self._backend(path)
        self.streams = Streams(self, self.backend)
        if self._extra.gc_freeze:
            gc.freeze()  # see TextGenerationSettings.gc_freeze
        TEXT_GENERATORS.add(self)  # the global routes find it from now on
        return True

    async def _backend(self, path: Path) -> Backend:
        """Redis workers when a Redis URL is set (settings, then environment), else this
        server's own engine."""
        extra = self._extra
        url = redis_url(extra)
        if url is not None:
            return RedisBackend.connect(url, extra, self.name, self.version)
        metrics = GenerationMetrics(self.name, self.version)
        client = await EngineClient.start(EngineSpec(path, extra, self.name), metrics)
        log = MemoryEventLog(
            extra.resume_retention_s, extra.resume_max_streams, extra.resume_max_events
        )
        return LocalBackend(client, log, extra.request_timeout_s)

    async def unload(self) -> bool:
        TEXT_GENERATORS.remove(self)
        backend = getattr(self, "backend", None)  # None when load failed part-way
        if backend is not None:
            await backend.stop()
        folder = getattr(self, "_folder", None)
        if folder is not None:
            folder.close()  # llama.cpp's vocabulary: freed now, not at process exit
        return True

    @property
    def requests(self) -> RequestParser:
        """Turns prompts and parameters into engine requests, with this model's limits."""
        return self._requests

    async def submit(self, request: TextRequest) -> RequestRecord:
        """Start generating (ServerAtCapacity / EngineUnavailable when it cannot)."""
        return await self.backend.submit(request)

    def cancel(self, record: RequestRecord) -> None:
        """Cancel a generation; its last delta says `cancelled`."""
        self.backend.cancel_record(record)

    def deltas(self, record: RequestRecord, coalesce: bool = True) -> AsyncIterator[Delta]:
        """The deltas of a submitted generation up to its final one; leaving early (a
        disconnect) cancels it. `coalesce` merges the deltas that wait into one."""
        return read_deltas(record, self.backend.cancel_record, coalesce)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        resumed = await self.streams.predict(payload)  # `resume` / `cancel` of a stream
        if resumed is not None:
            return resumed
        request = await self._requests.parse(payload)
        record = await self.submit(request)
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
