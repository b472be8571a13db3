"""Chat templates: shakespeare's play-script template, loading and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlserver_streaming.errors import InvalidSettings
from mlserver_streaming.openai.chat_template import TOKENIZER_CONFIG_FILE, ChatTemplate
from mlserver_streaming.openai.errors import OpenAIError

SHAKESPEARE = Path(__file__).parents[2] / "model-repo" / "shakespeare"
SCENE = [
    {"role": "system", "content": "Elsinore. A platform before the castle."},
    {"role": "user", "content": "Who's there?", "name": "Bernardo"},
    {"role": "assistant", "content": "Nay, answer me: stand, and unfold yourself."},
    {"role": "user", "content": "Long live the king!"},
]


@pytest.fixture(scope="module")
def shakespeare() -> ChatTemplate:
    template = ChatTemplate.from_folder(SHAKESPEARE, "shakespeare")
    assert template is not None
    return template


def test_a_conversation_becomes_a_play_script(shakespeare):
    assert shakespeare.render(SCENE, add_generation_prompt=True) == (
        "[Elsinore. A platform before the castle.]\n\n"
        "BERNARDO:\nWho's there?\n\n"
        "HORATIO:\nNay, answer me: stand, and unfold yourself.\n\n"
        "HAMLET:\nLong live the king!\n\n"
        "HORATIO:\n"
    )


def test_the_generation_prompt_is_the_last_named_assistant(shakespeare):
    messages = [*SCENE[:2], {"role": "assistant", "name": "Francisco", "content": "Bernardo?"}]
    text = shakespeare.render(messages, add_generation_prompt=True)
    assert text.endswith("FRANCISCO:\nBernardo?\n\nFRANCISCO:\n")
    assert shakespeare.render(messages, add_generation_prompt=False).endswith("Bernardo?\n\n")


def test_transformers_renders_it_the_same():
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(SHAKESPEARE)
    ours = ChatTemplate.from_folder(SHAKESPEARE, "shakespeare")
    assert ours is not None
    theirs = tokenizer.apply_chat_template(SCENE, tokenize=False, add_generation_prompt=True)
    assert theirs == ours.render(SCENE, add_generation_prompt=True)


def test_a_role_outside_the_play_is_refused_naming_messages(shakespeare):
    with pytest.raises(OpenAIError) as info:
        shakespeare.render([{"role": "tool", "content": "42"}], add_generation_prompt=True)
    assert info.value.param == "messages" and "has no part in this play" in info.value.message


def test_a_folder_without_a_template_has_none(tmp_path):
    assert ChatTemplate.from_folder(tmp_path, "m") is None
    (tmp_path / TOKENIZER_CONFIG_FILE).write_text(json.dumps({"eos_token": "</s>"}))
    assert ChatTemplate.from_folder(tmp_path, "m") is None


def test_named_templates_and_special_tokens(tmp_path):
    config = {
        "bos_token": {"content": "<s>", "lstrip": False},
        "chat_template": [
            {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}
        ],
    }
    (tmp_path / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config))
    template = ChatTemplate.from_folder(tmp_path, "m")
    assert (
        template is not None
        and template.render([{"role": "user", "content": "hi"}], True) == "<s>hi"
    )


def test_a_broken_template_fails_the_load(tmp_path):
    (tmp_path / TOKENIZER_CONFIG_FILE).write_text(json.dumps({"chat_template": "{% for %}"}))
    with pytest.raises(InvalidSettings, match="does not compile"):
        ChatTemplate.from_folder(tmp_path, "m")


def test_the_sandbox_refuses_unsafe_templates():
    template = ChatTemplate.from_source("{{ messages.__class__.__mro__ }}")
    with pytest.raises(OpenAIError, match="failed on these messages"):
        template.render([], add_generation_prompt=False)


def test_the_sandbox_is_immutable_a_template_cannot_change_the_messages():
    # A plain sandbox lets a template append to the list it was given; the immutable one
    # (transformers' choice) refuses, so a template cannot rewrite the request it renders.
    source = "{% set _ = messages.append({'role': 'user', 'content': 'x'}) %}{{ messages|length }}"
    template = ChatTemplate.from_source(source)
    with pytest.raises(OpenAIError, match="failed on these messages"):
        template.render([{"role": "user", "content": "hi"}], add_generation_prompt=False)
