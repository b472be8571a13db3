"""The request parameters of resumable streams, apart from the generation parameters.

`background`, `resume`, `cancel` and `starting_after` say how a request relates to a
stream's log; they are split off before the rest is parsed as `GenerationParams`. Values
are bool, int or string, so gRPC carries them as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import InvalidParameter
from ...params import as_bool, as_int, check_range, reject_unknown
from ..sample.params import PARAMETER_NAMES

BACKGROUND = "background"
RESUME = "resume"
CANCEL = "cancel"
STARTING_AFTER = "starting_after"
STREAM_PARAMETER_NAMES = (BACKGROUND, RESUME, CANCEL, STARTING_AFTER)
MAX_STREAM_ID = 128
_STREAM_ID = re.compile(r"[A-Za-z0-9._~:-]+")


def check_stream_id(name: str, value: object) -> str:
    """A stream id as a client may give one: 1 to 128 of `A-Z a-z 0-9 . _ ~ : -` (a
    request id, which MLServer mints as a random UUID when the client sends none).
    Whoever knows a stream's id can read and cancel it: keep it secret, or let the server
    mint it. InvalidParameter names `name` otherwise."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_STREAM_ID
        or not _STREAM_ID.fullmatch(value)
    ):
        shown = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
        raise InvalidParameter(
            f"{name} must be a stream id: 1 to {MAX_STREAM_ID} characters of A-Z, a-z, 0-9 "
            f"and . _ ~ : -, got {shown!r}."
        )
    return value


@dataclass(frozen=True)
class StreamParams:
    """How one request relates to a stream log."""

    background: bool = False
    """Keep generating when the client disconnects (resume later); cancel explicitly."""
    resume: str | None = None
    """Read the stream of this id after `starting_after` instead of starting a new one."""
    cancel: str | None = None
    """Cancel the generation of this stream id, then read it like `resume`."""
    starting_after: int = -1
    """The last event_index the client saw, >= -1 (-1: from the first event)."""

    @property
    def follows(self) -> str | None:
        """The id of the existing stream this request reads, if any."""
        return self.resume or self.cancel


def split_stream_params(raw: Mapping[str, Any]) -> tuple[StreamParams, dict[str, Any]]:
    """(stream parameters, the remaining generation parameters); InvalidParameter."""
    rest = {k: v for k, v in raw.items() if k not in STREAM_PARAMETER_NAMES}
    resume, cancel = _stream_id(raw, RESUME), _stream_id(raw, CANCEL)
    background = as_bool(BACKGROUND, raw.get(BACKGROUND, False))
    if resume is not None and cancel is not None:
        raise InvalidParameter("give resume or cancel, not both.")
    following = resume or cancel
    if following is not None and background:
        raise InvalidParameter("background applies to new streams, not to resume or cancel.")
    after = raw.get(STARTING_AFTER)
    if after is not None and following is None:
        raise InvalidParameter("starting_after needs resume (or cancel): the stream id to read.")
    starting_after = -1 if after is None else as_int(STARTING_AFTER, after)
    check_range(STARTING_AFTER, starting_after, -1)
    if following is not None:
        # The stream already has its parameters: the others are ignored, typos still refused.
        reject_unknown(rest, PARAMETER_NAMES)
    return StreamParams(background, resume, cancel, starting_after), rest


def _stream_id(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None else check_stream_id(name, value)
