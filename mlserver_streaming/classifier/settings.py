"""`parameters.extra` of the streaming classifier, parsed once at load."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..params import as_int, check_range
from ..settings import RuntimeSettings

# Names on the wire: the request parameter that overrides `chunk_size` per request.
PARAM_CHUNK_SIZE = "chunk_size"


class ClassifierSettings(RuntimeSettings):
    """Chunking, limits and micro-batching of one classifier model."""

    chunk_size: int = Field(1000, ge=1, le=1_000_000)
    """Rows per streamed event and per scoring step (1–1,000,000); requests may override it."""

    max_rows: int = Field(1_000_000, ge=1, le=100_000_000)
    """Most rows one request may carry (1–100,000,000); larger requests are refused."""

    max_batch_size: int = Field(256, ge=1, le=1_000_000)
    """Most rows scored in one estimator call when combining concurrent requests
    (1–1,000,000); 1 turns micro-batching off, so each request is scored on its own."""

    max_batch_time_ms: float = Field(2.0, ge=0, le=1000)
    """How long the first waiting rows wait for others to join their batch (ms, 0–1000);
    0 batches only what is already queued."""

    estimator_threads: int = Field(1, ge=1, le=256)
    """OpenMP threads per estimator call (1–256; e.g. gradient boosting): 1 leaves the
    other cores to the event loop, other streams and other models."""

    def request_chunk_size(self, raw: Any | None) -> int:
        """A request's `chunk_size` (this default when it sends none): 1 to `max_rows`."""
        if raw is None:
            return self.chunk_size
        chunk_size = as_int(PARAM_CHUNK_SIZE, raw)
        check_range(PARAM_CHUNK_SIZE, chunk_size, 1, self.max_rows)
        return chunk_size

    @property
    def batching(self) -> bool:
        """Whether concurrent requests share estimator calls."""
        return self.max_batch_size > 1
