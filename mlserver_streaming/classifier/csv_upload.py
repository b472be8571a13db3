"""Classifying a CSV upload while it arrives: body pieces → rows → chunks → scored events.

MLServer decodes a whole V2 request before a runtime sees it, so one 100k-row request
shows its first chunk only after the upload and JSON parsing. Here the body is parsed as it
arrives (`csv_stream`), every `chunk_size` rows go to the model's micro-batcher at once,
and each chunk's event leaves while the rest is still uploading. Events have the V2
stream's shape: an `InferenceResponse` with the outputs and `offset`, `rows_done` (and
`rows_total` when the client stated it); the last is final with `finish_reason:
"complete"`, and a bad line ends the stream with the error event naming it, after the
events of every row before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import numpy as np
from mlserver.rest.responses import ServerSentEvent
from mlserver.types import InferenceResponse
from starlette.requests import Request

from ..duplex import DuplexStreamingResponse
from ..errors import InvalidInput, InvalidParameter
from ..events import FinishReason, ParamValue, ending_with_error_event, event, final_event
from ..params import as_int, check_range, reject_unknown
from .csv_stream import HEADER_MODES, CsvRowParser, HeaderMode, ParsedRows
from .loaded import CLASSIFIERS, Classifier
from .outputs import (
    PARAM_OFFSET,
    PARAM_ROWS_DONE,
    PARAM_ROWS_TOTAL,
    available_outputs,
    encode_scores,
)
from .scoring import Scores
from .settings import PARAM_CHUNK_SIZE

_Submitted = tuple["asyncio.Future[Scores]", bool]
SCORING_AHEAD = 2
"""Chunks submitted for scoring ahead of the one being sent: enough to keep the scoring
thread busy, few enough that a slow reader holds the upload back (through `duplex`)."""

# Query parameters of the upload route (the request body is the CSV itself).
QUERY_ROWS_TOTAL = "rows_total"
QUERY_HEADER = "header"


@dataclass(frozen=True)
class UploadOptions:
    """The query parameters of one upload, checked before the stream starts (a 400)."""

    chunk_size: int
    rows_total: int | None
    header: HeaderMode

    @classmethod
    def parse(cls, query: Mapping[str, str], model: Classifier) -> UploadOptions:
        """From `?chunk_size=&rows_total=&header=`; the model's settings give the limits."""
        reject_unknown(query, allowed=(PARAM_CHUNK_SIZE, QUERY_ROWS_TOTAL, QUERY_HEADER))
        limits = model.extra
        chunk_size = limits.request_chunk_size(query.get(PARAM_CHUNK_SIZE))
        rows_total = None
        if QUERY_ROWS_TOTAL in query:
            rows_total = as_int(QUERY_ROWS_TOTAL, query[QUERY_ROWS_TOTAL])
            check_range(QUERY_ROWS_TOTAL, rows_total, 1, limits.max_rows)
        header = query.get(QUERY_HEADER, "auto")
        if header not in HEADER_MODES:
            raise InvalidParameter(
                f"header must be one of {', '.join(HEADER_MODES)}, got {header!r}."
            )
        return cls(chunk_size, rows_total, header)  # type: ignore[arg-type]


class RowChunker:
    """Groups rows into chunks of `size`, holding the last rows back until more rows (or the
    end) tell whether they are the last chunk, so the final event carries real rows."""

    def __init__(self, size: int):
        self.size = size
        self._parts: list[np.ndarray] = []
        self._count = 0

    def push(self, rows: np.ndarray) -> list[np.ndarray]:
        """Add rows; the full chunks known not to be the last."""
        if len(rows):
            self._parts.append(rows)
            self._count += len(rows)
        chunks = []
        while self._count > self.size:
            merged = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
            chunks.append(merged[: self.size])
            self._parts, self._count = [merged[self.size :]], self._count - self.size
        return chunks

    def drain(self) -> np.ndarray | None:
        """Whatever rows are held back (None if none)."""
        if not self._count:
            return None
        rows = np.concatenate(self._parts)
        self._parts, self._count = [], 0
        return rows


async def row_chunks(
    pieces: AsyncIterator[bytes], n_features: int, options: UploadOptions, max_rows: int
) -> AsyncIterator[tuple[np.ndarray, bool]]:
    """(rows, is_last) chunks of the upload; after the rows before a bad line, raise."""
    parser, chunker = CsvRowParser(n_features, options.header), RowChunker(options.chunk_size)
    limit = options.rows_total or max_rows
    seen = 0

    def take(parsed: ParsedRows) -> list[np.ndarray]:
        nonlocal seen
        seen += len(parsed.rows)
        if seen > limit:
            name = "rows_total" if options.rows_total else "max_rows"
            raise InvalidInput(f"the upload has more than {limit} rows ({name}).")
        return chunker.push(parsed.rows)

    async for piece in pieces:
        parsed = parser.feed(piece)
        for chunk in take(parsed):
            yield chunk, False
        if parsed.error is not None:
            break
        # Pieces already received are taken without a pause; let finished chunks go out.
        await asyncio.sleep(0)
    else:
        parsed = parser.close()
        for chunk in take(parsed):
            yield chunk, False
    rest, error = chunker.drain(), parsed.error
    if error is None and options.rows_total not in (None, seen):
        error = InvalidInput(f"rows_total is {options.rows_total}, the upload had {seen} rows.")
    if error is None and not seen:
        error = InvalidInput("the upload holds no rows (CSV lines of numbers).")
    if rest is not None:
        yield rest, error is None
    if error is not None:
        raise error


async def scored_chunks(
    model: Classifier, chunks: AsyncIterator[tuple[np.ndarray, bool]]
) -> AsyncIterator[tuple[Scores, bool]]:
    """(scores, is_last) in order, each as soon as it is scored: a task parses the upload and
    submits its chunks (up to `SCORING_AHEAD` waiting) while earlier ones are sent."""
    queue: asyncio.Queue[_Submitted | Exception | None] = asyncio.Queue(SCORING_AHEAD)

    async def submit() -> None:
        try:
            async for rows, last in chunks:
                await queue.put((asyncio.ensure_future(model.score(rows)), last))
            await queue.put(None)
        except Exception as err:  # noqa: BLE001 - handed to the reader, after the rows before it
            await queue.put(err)

    submitter = asyncio.create_task(submit())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                raise item
            scores, last = item
            yield await scores, last
    finally:
        submitter.cancel()
        while not queue.empty():
            leftover = queue.get_nowait()
            if isinstance(leftover, tuple):
                leftover[0].cancel()


async def upload_events(
    model: Classifier, pieces: AsyncIterator[bytes], options: UploadOptions
) -> AsyncIterator[InferenceResponse]:
    """The V2 events of one upload (errors not yet turned into the final event)."""
    outputs = available_outputs(model.schema)
    chunks = row_chunks(pieces, model.schema.n_features, options, model.extra.max_rows)
    done = 0
    async for scores, last in scored_chunks(model, chunks):
        progress: dict[str, ParamValue] = {PARAM_OFFSET: done, PARAM_ROWS_DONE: done + len(scores)}
        if options.rows_total is not None:
            progress[PARAM_ROWS_TOTAL] = options.rows_total
        done += len(scores)
        encoded = encode_scores(scores, outputs)
        if last:
            yield final_event(model, FinishReason.COMPLETE, encoded, **progress)
        else:
            yield event(model, encoded, **progress)


async def upload_sse(
    model: Classifier, pieces: AsyncIterator[bytes], options: UploadOptions
) -> AsyncIterator[bytes]:
    """`upload_events` as Server-Sent Events, in the bytes MLServer's `/infer_stream` sends."""
    events = ending_with_error_event(model, upload_events(model, pieces, options))
    async for item in events:
        yield ServerSentEvent(item).encode()


def classify_csv_response(request: Request) -> DuplexStreamingResponse:
    """The upload route's answer: 404 / 400 before the stream, then the SSE events."""
    params = request.path_params
    model = CLASSIFIERS.require(params["model_name"], params.get("model_version"))
    options = UploadOptions.parse(dict(request.query_params), model)
    return DuplexStreamingResponse(lambda pieces: upload_sse(model, pieces, options))
