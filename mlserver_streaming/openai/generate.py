"""An OpenAI request's n choices → engine requests, submitted together.

The prompt and parameters go through the model's own `RequestParser.build`, so the OpenAI
routes have the V2 path's defaults and limits; its errors come back naming the field the
client sent. Choice i samples with seed + i (mod 2**63), so choice 0 of a seeded request is
the completion a single request with that seed gets; unseeded choices draw seeds of their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput, InvalidParameter
from ..inputs import INPUT_PROMPT
from ..text.loaded import TextModel
from ..text.record import RequestRecord
from ..text.request import TextRequest
from ..text.sample.params import MAX_SEED, PARAMETER_NAMES, random_seed
from .errors import OpenAIError, invalid
from .streaming import ChoiceStreams


def named_error(
    err: InvalidParameter | InvalidInput, names: Mapping[str, str], prompt_field: str
) -> OpenAIError:
    """A parser error as a 400 whose message and `param` use the client's field names."""
    message = str(err)
    if isinstance(err, InvalidInput):
        return invalid(message.replace(f"input {INPUT_PROMPT!r}", prompt_field), prompt_field)
    raw = "stop" if message.startswith("each stop sequence") else message.split(" ", 1)[0]
    if raw not in PARAMETER_NAMES:
        return invalid(message, None)
    field = names.get(raw, raw)
    if message.startswith(raw):
        message = field + message[len(raw) :]
    return invalid(message, field)


async def build_choices(
    model: TextModel,
    prompt: str,
    raw: Mapping[str, Any],
    n: int,
    names: Mapping[str, str],
    prompt_field: str,
) -> list[TextRequest]:
    """n engine requests for one prompt: the same parameters, seeds seed + i."""
    try:
        first = await model.requests.build_async(prompt, raw)
    except (InvalidParameter, InvalidInput) as err:
        raise named_error(err, names, prompt_field) from err
    seed = raw.get("seed")
    seeds = [random_seed() if seed is None else (seed + i) % (MAX_SEED + 1) for i in range(1, n)]
    return [first] + [
        TextRequest(first.prompt_ids, dataclasses.replace(first.params, seed=s)) for s in seeds
    ]


async def submit_all(
    model: TextModel, requests: list[TextRequest]
) -> tuple[list[RequestRecord], ChoiceStreams]:
    """Submit every choice in one go; if one is refused (at capacity), cancel the others."""
    records: list[RequestRecord] = []
    try:
        for request in requests:
            records.append(await model.submit(request))
    except BaseException:
        (await ChoiceStreams.open(model, records)).close()
        raise
    return records, await ChoiceStreams.open(model, records)
