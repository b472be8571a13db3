"""Chat messages → one prompt string, by the model's chat template (Hugging Face's convention).

The template is the Jinja `chat_template` of the model folder's `tokenizer_config.json`,
rendered as transformers' `apply_chat_template` does: a sandboxed environment with
`trim_blocks` and `lstrip_blocks`, `raise_exception`, `messages`, `add_generation_prompt` and
the special tokens (`bos_token`, `eos_token`, ...) in scope. It is read and compiled at load,
so a broken template fails the load; a model without one refuses chat with a 400.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InvalidSettings
from .errors import invalid

if TYPE_CHECKING:
    from ..text.model_folder import ModelFolder

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_KEY = "chat_template"
_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


class TemplateRefusal(Exception):
    """`raise_exception(...)` called by a template: the conversation is not one it accepts."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateRefusal(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    # transformers' override: no HTML escaping (templates write JSON into prompts, not pages).
    return json.dumps(value, indent=indent, ensure_ascii=False)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    return env


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config holds it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template_source(value: Any, where: str) -> str:
    """The template text: a string, or the "default" of a list of named templates."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        default = named.get("default")
        if isinstance(default, str):
            return default
    raise InvalidSettings(f"{where}: {CHAT_TEMPLATE_KEY} must be a string or name a 'default'.")


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template and the special tokens it may use."""

    template: jinja2.Template
    special_tokens: dict[str, str]

    @classmethod
    def from_source(cls, source: str, special_tokens: dict[str, str] | None = None) -> ChatTemplate:
        """Compile a template's text (jinja2.TemplateSyntaxError when it is broken)."""
        return cls(_environment().from_string(source), dict(special_tokens or {}))

    @classmethod
    def from_folder(cls, folder: Path, model_name: str) -> ChatTemplate | None:
        """The folder's template, None without one; InvalidSettings when it is unreadable."""
        path = folder / TOKENIZER_CONFIG_FILE
        if not path.is_file():
            return None
        where = f"model {model_name!r}: {path}"
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InvalidSettings(f"{where} is not valid JSON: {err}") from err
        if not isinstance(config, dict) or config.get(CHAT_TEMPLATE_KEY) is None:
            return None
        source = _template_source(config[CHAT_TEMPLATE_KEY], where)
        tokens = {name: _token_text(config.get(name)) for name in _SPECIAL_TOKENS}
        try:
            return cls.from_source(source, {k: v for k, v in tokens.items() if v is not None})
        except jinja2.TemplateSyntaxError as err:
            raise InvalidSettings(f"{where}: {CHAT_TEMPLATE_KEY} does not compile: {err}") from err

    @classmethod
    def for_model(cls, folder: ModelFolder, model_name: str) -> ChatTemplate | None:
        """The template the model file carries (GGUF), else its folder's tokenizer_config."""
        embedded = folder.embedded_chat_template
        if embedded is None:
            return cls.from_folder(folder.path, model_name) if folder.path.is_dir() else None
        try:
            return cls.from_source(embedded.source, embedded.special_tokens)
        except jinja2.TemplateSyntaxError as err:
            where = f"model {model_name!r}: {folder.path}"
            raise InvalidSettings(f"{where}: its chat template does not compile: {err}") from err

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        """The prompt for a conversation; a 400 naming `messages` when the template refuses it."""
        try:
            return self.template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except TemplateRefusal as err:
            raise invalid(f"the chat template refused the messages: {err}", "messages") from err
        except jinja2.TemplateError as err:
            raise invalid(f"the chat template failed on these messages: {err}", "messages") from err


def no_template(model_name: str) -> Exception:
    """The 400 for chat with a model whose folder has no chat template."""
    return invalid(
        f"model {model_name!r} has no chat template ({CHAT_TEMPLATE_KEY} in its "
        f"{TOKENIZER_CONFIG_FILE}), so it cannot serve /v1/chat/completions; "
        "use /v1/completions with a prompt.",
        "model",
    )
