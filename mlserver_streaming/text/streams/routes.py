"""`GET /v2/streams/{id}` (a stream's events as SSE, resumable by a browser's EventSource)
and `POST /v2/streams/{id}/cancel`, as MLServer custom handlers of every text generator.

MLServer's custom routes are global, so the handlers serve every loaded text generator:
they look the stream id up in each one's log (`registry.py` explains the pattern).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from mlserver.codecs.json import encode_to_json_bytes
from mlserver.errors import MLServerError
from mlserver.handlers import custom_handler
from mlserver.types import InferenceResponse
from starlette.requests import Request
from starlette.responses import Response

from ...errors import InvalidParameter, RedisUnavailable, StreamingError, StreamNotFound
from ...events import EVENT_INDEX, error_event
from ...params import as_int, check_range
from ...sse import id_event, sse_response
from ..loaded import TEXT_GENERATORS, TextModel
from .event_log import StreamLog
from .params import STARTING_AFTER, check_stream_id
from .streams import EMPTY_OUTPUTS, entry_event

STREAM_PATH = "/v2/streams/{stream_id}"
CANCEL_PATH = "/v2/streams/{stream_id}/cancel"
LAST_EVENT_ID = "last-event-id"
HTTP_NO_CONTENT = 204


async def find_stream(stream_id: str) -> tuple[TextModel, StreamLog]:
    """The generator and log of a stream id (StreamNotFound when no model has it)."""
    check_stream_id("the stream id", stream_id)
    missing: StreamNotFound | None = None
    for model in TEXT_GENERATORS.all():
        try:
            return model, await model.streams.find(stream_id)
        except StreamNotFound as err:
            missing = err
    raise missing or StreamNotFound(f"stream {stream_id!r} not found: no text model is loaded.")


def starting_after(request: Request) -> int:
    """The last event the client saw: `Last-Event-ID` (sent by EventSource when it
    reconnects), else the `starting_after` query parameter, else -1 (from the start)."""
    raw = request.headers.get(LAST_EVENT_ID) or request.query_params.get(STARTING_AFTER)
    name = "Last-Event-ID" if request.headers.get(LAST_EVENT_ID) else STARTING_AFTER
    after = -1 if raw is None else as_int(name, raw)
    check_range(name, after, -1)
    return after


async def sse_lines(model: TextModel, stream: StreamLog, after: int) -> AsyncIterator[bytes]:
    """`id: <event_index>` and `data: <V2 event JSON>` per event, up to the final one; an
    error found while reading is that final event (the status is already sent)."""
    try:
        async for index, entry in stream.entries(after):
            response = entry_event(model, entry, index, stream.logprobs)
            yield _sse_event(stream, index, response)
    except MLServerError as err:
        failed = error_event(model, err, EMPTY_OUTPUTS, **{EVENT_INDEX: stream.length})
        yield _sse_event(stream, stream.length, failed)


def _sse_event(stream: StreamLog, index: int, response: InferenceResponse) -> bytes:
    response.id = stream.stream_id
    return id_event(index, encode_to_json_bytes(response.model_dump(exclude_none=True)))


def error_response(err: StreamingError) -> Response:
    """A failure before the stream began, with its status, as MLServer answers errors."""
    return Response(encode_to_json_bytes({"error": str(err)}), err.status_code)


class StreamRoutes:
    """Mixin of TextGenerator: the stream routes, dispatched by stream id."""

    @custom_handler(rest_path=STREAM_PATH, rest_method="GET")
    async def stream_events(self, request: Request) -> Response:
        """A stream's events after the last one the client saw, then its live tail."""
        try:
            model, stream = await find_stream(request.path_params["stream_id"])
            after = starting_after(request)
            if stream.ended and after >= stream.length - 1:
                # Everything seen: 204 tells an EventSource to stop reconnecting.
                return Response(status_code=HTTP_NO_CONTENT)
            stream.entries(after)  # refuses a bad index now, while a status can still say so
        except (StreamNotFound, InvalidParameter, RedisUnavailable) as err:
            return error_response(err)
        return sse_response(sse_lines(model, stream, after))

    @custom_handler(rest_path=CANCEL_PATH, rest_method="POST")
    async def cancel_stream(self, request: Request) -> Response:
        """Cancel a stream's generation; its log ends with a `cancelled` final event."""
        stream_id = request.path_params["stream_id"]
        try:
            model, _ = await find_stream(stream_id)
            stream = await model.streams.cancel(stream_id)
        except (StreamNotFound, InvalidParameter, RedisUnavailable) as err:
            return error_response(err)
        body = {"id": stream_id, "ended": stream.ended, "events": stream.length}
        return Response(encode_to_json_bytes(body), media_type="application/json")
