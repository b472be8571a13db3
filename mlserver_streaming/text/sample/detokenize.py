"""Incremental detokenization, TGI style, safe for multi-byte characters.

Decoding one token at a time breaks text: a byte-level BPE token may hold half of an emoji,
and some decoders change a token's text depending on what precedes it. So each step decodes
a short window with a little earlier context, returns only what the window added, and holds
text back while it ends with U+FFFD (an incomplete character).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tokenizer import Decoder

REPLACEMENT_CHAR = "\ufffd"
CONTEXT_TOKENS = 5
"""Prompt tokens decoded ahead of the first generated one (TGI and vLLM use 5)."""


class IncrementalDetokenizer:
    """Turns one request's generated token ids into text deltas; special tokens are skipped.

    Concatenating every `step` result and `flush` gives the decoded generated text.
    """

    def __init__(self, tokenizer: Decoder, prompt_ids: Sequence[int] = ()) -> None:
        context = list(prompt_ids)[-CONTEXT_TOKENS:]
        self._tokenizer = tokenizer
        # The decode window: context ids, then ids whose text is not yet returned (TGI's
        # prefix_offset is always 0 here because older ids are dropped).
        self._ids: list[int] = context
        self._read_offset = len(context)

    def step(self, token_id: int) -> str:
        """Add one generated token; return the text it completes (often "", never half a char)."""
        self._ids.append(token_id)
        prefix_text, window_text = self._decode_window()
        if len(window_text) <= len(prefix_text) or window_text.endswith(REPLACEMENT_CHAR):
            return ""
        # The new window start is the old read offset: context enough for the next step.
        del self._ids[: self._read_offset]
        self._read_offset = len(self._ids)
        return window_text[len(prefix_text) :]

    def flush(self) -> str:
        """The text still held back at the end of generation, even if it is incomplete."""
        prefix_text, window_text = self._decode_window()
        del self._ids[: self._read_offset]
        self._read_offset = len(self._ids)
        return window_text[len(prefix_text) :]

    def _decode_window(self) -> tuple[str, str]:
        """(text of the context part, text of the whole window), special tokens skipped."""
        decode = self._tokenizer.decode
        return decode(self._ids[: self._read_offset]), decode(self._ids)
