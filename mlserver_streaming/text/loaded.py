"""What the global text routes see of a text generator, and the ones loaded in this process
(the OpenAI routes find them by `model`, the stream routes by stream id).

The routes are mixins of the runtime class (MLServer's custom handlers must be its
methods), so they must not import it: they work on `TextModel`, what a text generator
offers a route, and the runtime class satisfies it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from ..events import ModelIdentity
from ..registry import LoadedModels
from .record import RequestRecord
from .request import RequestParser, TextRequest
from .sample.generation import Delta
from .streams.streams import Streams


class TextModel(ModelIdentity, Protocol):
    """A loaded text generator, as its routes use it."""

    @property
    def requests(self) -> RequestParser:
        """Turns prompts and parameters into engine requests, with the model's limits."""
        ...

    @property
    def streams(self) -> Streams:
        """The model's resumable streams."""
        ...

    async def submit(self, request: TextRequest) -> RequestRecord:
        """Start generating (ServerAtCapacity / EngineUnavailable when it cannot)."""
        ...

    def cancel(self, record: RequestRecord) -> None:
        """Cancel a generation; its last delta says `cancelled`."""
        ...

    def deltas(self, record: RequestRecord, coalesce: bool = True) -> AsyncIterator[Delta]:
        """The deltas of a submitted generation up to its final one."""
        ...


TEXT_GENERATORS: LoadedModels[TextModel] = LoadedModels()
