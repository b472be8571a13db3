"""The streaming classifier runtime: any joblib-saved scikit-learn classifier over V2.

`predict` answers a batch at once; `predict_stream` answers it in chunks of
`chunk_size` rows as they are scored, and on a gRPC bidi stream answers each request as
soon as it is done, in order. Both score in chunks on the model's scoring thread, through
the micro-batcher unless batching is off, one chunk ahead of the one being sent: the
event loop stays free and concurrent callers share estimator calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import joblib
import numpy as np
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri

from ..errors import InvalidSettings
from ..events import FinishReason, ParamValue, event, final_event, stream_requests
from ..playground.routes import PlaygroundRoutes
from ..serving import check_streaming_server
from ..settings import parse_extra
from .batcher import MicroBatcher
from .features import ClassifyRequest, parse_request
from .loaded import CLASSIFIERS
from .metadata import input_metadata, output_metadata, reconcile
from .outputs import PARAM_OFFSET, PARAM_ROWS_DONE, PARAM_ROWS_TOTAL, encode_scores
from .routes import ClassifierRoutes
from .scoring import Schema, Scorer, Scores, ScoringThread
from .settings import ClassifierSettings

MODEL_FILENAME = "model.joblib"

# MLServer loads models concurrently, so two versions' unpickling can import scikit-learn
# in two threads at once. Python does not wait for a package that is still initialising
# before running its submodules, so the threads take module locks in opposite orders
# (`sklearn` then `sklearn.base`, and the reverse); importlib breaks that deadlock by
# handing one of them the half-initialised module ("cannot import name 'clone' from
# partially initialized module 'sklearn.base'") and the load fails. A pickle may import
# any module, so unpickling runs one at a time in the process.
_UNPICKLING = threading.Lock()


def load_estimator(path: str) -> Any:
    """`joblib.load`, one at a time per process, so its imports never race; blocks."""
    with _UNPICKLING:
        return joblib.load(path)


class StreamingClassifier(PlaygroundRoutes, ClassifierRoutes, MLModel):
    """Serves `predict` (+ `predict_proba`) of a joblib-saved scikit-learn classifier."""

    async def load(self) -> bool:
        check_streaming_server(self, streaming_only=False)
        self._extra = parse_extra(self.settings, ClassifierSettings)
        path = await get_model_uri(self.settings, wellknown_filenames=[MODEL_FILENAME])
        estimator = await asyncio.to_thread(load_estimator, path)
        source = f"model {self.name!r} ({path})"
        self._schema = schema = Schema.of(estimator, source=source)
        self._thread = ScoringThread(Scorer(estimator, schema), self._extra.estimator_threads)
        try:  # fail the load, not the first request
            await self._thread(np.zeros((1, schema.n_features)))
        except Exception as err:
            raise InvalidSettings(f"{source}: scoring one row of zeros failed: {err!r}") from err
        self.inputs = reconcile(self.settings.inputs, input_metadata(schema), source)
        self.outputs = reconcile(self.settings.outputs, output_metadata(schema), source)
        self._batcher: MicroBatcher[Scores] | None = None
        if self._extra.batching:
            self._batcher = MicroBatcher(
                self._thread, self._extra.max_batch_size, self._extra.max_batch_time_ms / 1000
            )
            self._batcher.start()
        CLASSIFIERS.add(self)
        return True

    async def unload(self) -> bool:
        CLASSIFIERS.remove(self)
        batcher = getattr(self, "_batcher", None)
        if batcher is not None:
            await batcher.stop()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.close()
        return True

    @property
    def extra(self) -> ClassifierSettings:
        """This model's `parameters.extra`, parsed at load."""
        return self._extra

    @property
    def schema(self) -> Schema:
        """Feature count and class order of the loaded estimator."""
        return self._schema

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request = parse_request(payload, self.schema, self._extra)
        parts = [scores async for _, scores in self._scored_chunks(request)]
        total = len(request.rows)
        return chunk_event(
            self, encode_scores(Scores.concat(parts), request.outputs), 0, total, total
        )

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        return stream_requests(self, payloads, self._stream_chunks)

    async def _stream_chunks(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> AsyncIterator[InferenceResponse]:
        request = parse_request(payload, self.schema, self._extra)
        total = len(request.rows)
        async for offset, scores in self._scored_chunks(request):
            outputs = encode_scores(scores, request.outputs)
            yield chunk_event(self, outputs, offset, len(scores), total, **tags)

    async def _scored_chunks(self, request: ClassifyRequest) -> AsyncIterator[tuple[int, Scores]]:
        """(offset, scores) per chunk; the next chunk is scored while this one is sent."""
        rows, size = request.rows, request.chunk_size
        ahead = asyncio.ensure_future(self.score(rows[:size]))
        try:
            for offset in range(0, len(rows), size):
                current, following = ahead, rows[offset + size : offset + 2 * size]
                if len(following):
                    ahead = asyncio.ensure_future(self.score(following))
                yield offset, await current
        finally:
            _discard(ahead)

    async def score(self, rows: np.ndarray) -> Scores:
        """Scores of some rows, through the micro-batcher unless batching is off."""
        if self._batcher is not None:
            return await self._batcher.submit(rows)
        return await self._thread(rows)


def _discard(task: asyncio.Task) -> None:
    """Cancel a look-ahead nobody will read, without "exception never retrieved" noise."""
    task.cancel()
    if task.done() and not task.cancelled():
        task.exception()


def chunk_event(
    model: MLModel,
    outputs: Sequence[ResponseOutput],
    offset: int,
    rows: int,
    total: int,
    **params: ParamValue,
) -> InferenceResponse:
    """One chunk's event; the chunk that completes the request is its final event."""
    progress: dict[str, ParamValue] = {
        PARAM_OFFSET: offset,
        PARAM_ROWS_DONE: offset + rows,
        PARAM_ROWS_TOTAL: total,
        **params,
    }
    if offset + rows == total:
        return final_event(model, FinishReason.COMPLETE, outputs, **progress)
    return event(model, outputs, **progress)
