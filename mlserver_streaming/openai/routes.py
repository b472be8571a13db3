"""The OpenAI routes, as MLServer custom handlers of every text generator.

MLServer's custom routes are global: each loaded text generator adds the same three paths,
the first added answers, and a model's routes go when it unloads. So no handler serves
`self`: each looks the body's `model` up in `TEXT_GENERATORS`, where every text generator is
registered at the end of its load and removed at its unload, and any generator's route can
answer for all of them (loading, unloading or reloading one leaves the others reachable).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson
from mlserver.handlers import custom_handler
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from ..disconnect import ClientGone, unless_disconnected
from ..sse import sse_response
from ..text.loaded import TEXT_GENERATORS, TextModel
from .chat_template import ChatTemplate, no_template
from .chunks import Head, model_card
from .errors import OpenAIError, body_too_large, from_exception, invalid, model_not_found
from .generate import build_choices, submit_all
from .logprobs import TokenStrings
from .protocol import ChatCompletionRequest, CompletionRequest, Sampling
from .render import ChatRenderer, CompletionRenderer, Renderer, stream_events, unary

if TYPE_CHECKING:
    from ..text.model_folder import ModelFolder
    from ..text.prompt import PromptLimits

MAX_BODY_ENV = "MLSERVER_STREAMING_MAX_BODY_BYTES"
"""The largest request body an OpenAI route reads (bytes; default 16 MiB)."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def max_body_bytes() -> int:
    """The body limit from the environment (a bad value: the default, as for keep-alives)."""
    raw = os.environ.get(MAX_BODY_ENV, "")
    return int(raw) if raw.strip().isdigit() and int(raw) > 0 else DEFAULT_MAX_BODY_BYTES


HTTP_CLIENT_GONE = 499
"""nginx's status for a client that closed the connection (nobody reads it)."""
MODELS_PATH = "/v1/models"
COMPLETIONS_PATH = "/v1/completions"
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class OpenAIState:
    """What the OpenAI routes keep of one loaded text generator."""

    chat_template: ChatTemplate | None
    strings: TokenStrings
    created: int
    """Load time (Unix seconds): `created` in `GET /v1/models`."""


def json_response(body: dict[str, Any], status: int = 200, headers: dict | None = None) -> Response:
    """A JSON response (orjson, as MLServer's own)."""
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(err: BaseException) -> Response:
    """Any failure before a stream began, in OpenAI's shape with its status."""
    error = from_exception(err)
    return json_response(error.body(), error.status, error.headers())


async def read_body(request: Request, model_class: type[BaseModel]) -> Any:
    """The request body validated as `model_class` (a 400 naming the bad field; a 413 past
    `max_body_bytes()`, before more of it is read)."""
    limit, parts, size = max_body_bytes(), [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise body_too_large(limit)
        parts.append(part)
    try:
        data = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError as err:
        raise invalid(f"the request body is not valid JSON: {err}", None) from err
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object.", None)
    return model_class.model_validate(data)


def check_messages_length(body: ChatCompletionRequest, limits: PromptLimits) -> None:
    """Refuse a conversation too long for any prompt before rendering it (a template adds
    text, never removes any)."""
    chars = sum(len(message.content or "") for message in body.messages)
    if limits.max_prompt_chars is not None and chars > limits.max_prompt_chars:
        raise invalid(
            f"messages must be at most {limits.max_prompt_tokens} tokens; their {chars} "
            f"characters are more than any prompt of that many tokens holds "
            f"({limits.max_prompt_chars}).",
            "messages",
        )


class OpenAIModel(TextModel, Protocol):
    """A text generator with the OpenAI routes (every registered one: the routes are a
    mixin of the runtime class)."""

    openai_state: OpenAIState


def loaded(name: str) -> OpenAIModel:
    """The loaded text generator a request names (404 otherwise)."""
    model = TEXT_GENERATORS.get(name)
    if model is None:
        raise model_not_found(name, TEXT_GENERATORS.names())
    return cast(OpenAIModel, model)


async def serve(
    request: Request,
    body: Sampling,
    model: OpenAIModel,
    prompt: str,
    raw: dict[str, Any],
    names: dict[str, str],
    renderer: Callable[[Head, TokenStrings], Renderer],
) -> Response:
    """Submit the n choices, then stream them or answer once they are done."""
    chat = isinstance(body, ChatCompletionRequest)
    requests = await build_choices(
        model, prompt, raw, body.n, names, "messages" if chat else "prompt"
    )
    records, streams = await submit_all(model, requests)
    render = renderer(Head(body.model, chat), model.openai_state.strings)
    if body.stream:
        return sse_response(stream_events(render, records, streams, body.include_usage))
    try:  # a client that leaves cancels its choices (their slots go to the others)
        return json_response(await unless_disconnected(request, unary(render, records, streams)))
    except ClientGone:
        return Response(status_code=HTTP_CLIENT_GONE)


class OpenAIRoutes:
    """Mixin of TextGenerator: `GET /v1/models`, `POST /v1/completions` and
    `POST /v1/chat/completions` (OpenAI's API, vLLM's wire format)."""

    openai_state: OpenAIState

    def prepare_openai(self, folder: ModelFolder) -> None:
        """Read the chat template (a broken one fails the load); call in `load` before
        anything that would need undoing, such as starting the engine."""
        model = cast(TextModel, self)
        template = ChatTemplate.for_model(folder, model.name)
        strings = TokenStrings(model.requests.tokenizer)
        self.openai_state = OpenAIState(template, strings, int(time.time()))

    @custom_handler(rest_path=MODELS_PATH, rest_method="GET")
    async def openai_models(self, request: Request) -> Response:
        """Every loaded text generator."""
        cards = []
        for name in TEXT_GENERATORS.names():
            model = loaded(name)
            limit = model.requests.limits.max_total_tokens
            cards.append(model_card(name, model.openai_state.created, limit))
        return json_response({"object": "list", "data": cards})

    @custom_handler(rest_path=COMPLETIONS_PATH, rest_method="POST")
    async def openai_completions(self, request: Request) -> Response:
        """A completion of one prompt, streamed (SSE) or whole."""
        try:
            body: CompletionRequest = await read_body(request, CompletionRequest)
            model = loaded(body.model)

            raw, names = body.raw_parameters(), body.field_names()

            def renderer(head: Head, strings: TokenStrings) -> Renderer:
                return CompletionRenderer(head, strings, raw.get("logprobs"))

            return await serve(request, body, model, body.prompt, raw, names, renderer)
        except Exception as err:  # noqa: BLE001 - every failure answers in OpenAI's shape
            return error_response(err)

    @custom_handler(rest_path=CHAT_COMPLETIONS_PATH, rest_method="POST")
    async def openai_chat_completions(self, request: Request) -> Response:
        """The assistant's reply to a conversation (rendered by the model's chat template)."""
        try:
            body: ChatCompletionRequest = await read_body(request, ChatCompletionRequest)
            model = loaded(body.model)
            template = model.openai_state.chat_template
            if template is None:
                raise no_template(model.name)
            check_messages_length(body, model.requests.limits)
            prompt = template.render(body.template_messages(), body.add_generation_prompt)

            def renderer(head: Head, strings: TokenStrings) -> Renderer:
                return ChatRenderer(head, strings, body.logprobs)

            raw, names = body.raw_parameters(), body.field_names()
            return await serve(request, body, model, prompt, raw, names, renderer)
        except Exception as err:  # noqa: BLE001 - every failure answers in OpenAI's shape
            return error_response(err)


__all__ = ["OpenAIError", "OpenAIRoutes"]
