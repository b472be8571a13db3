"""When generation ends, TGI style: a token-level criteria and a text-level stop matcher.

`StoppingCriteria` sees token ids (eos, length); `StopSequenceMatcher` sees the detokenized
text and holds back whatever could still become a stop sequence, so that no part of a stop
sequence is ever emitted, even when it spans several deltas.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from ...events import FinishReason
from .params import GenerationParams


class StoppingCriteria:
    """Counts generated tokens and stops on an end-of-generation id (eos, end of turn: any
    the model has) or at max_new_tokens.

    When the last allowed token ends the generation, the reason is EOS: the model ended on
    its own, and LENGTH would wrongly suggest that the text was cut short.
    """

    def __init__(self, eog_token_ids: Collection[int], max_new_tokens: int) -> None:
        self.eog_token_ids = frozenset(eog_token_ids)
        self.max_new_tokens = max_new_tokens
        self.generated = 0

    @classmethod
    def from_params(
        cls, params: GenerationParams, eog_token_ids: Collection[int]
    ) -> StoppingCriteria:
        """Criteria for one request: its max_tokens and the model's end-of-generation ids."""
        return cls(eog_token_ids, params.max_tokens)

    def __call__(self, token_id: int) -> tuple[bool, FinishReason | None]:
        """Record one generated token; (True, reason) once generation must end."""
        self.generated += 1
        if token_id in self.eog_token_ids:
            return True, FinishReason.EOS
        if self.generated >= self.max_new_tokens:
            return True, FinishReason.LENGTH
        return False, None


class StopSequenceMatcher:
    """Finds stop sequences in streamed text; emits only text that cannot begin one.

    When several stop sequences are complete, the one ending first wins (on a tie, the one
    starting first), so the outcome does not depend on how the text was split into deltas.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(s for s in stop if s)
        self._held = ""
        self.matched = False

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add a text delta; return (text now safe to emit, whether a stop sequence matched).

        On a match the text before the stop sequence is returned; the sequence itself and
        anything after it are dropped, and later calls return ("", True).
        """
        if self.matched:
            return "", True
        text = self._held + delta
        start = self._first_match(text)
        if start is not None:
            self._held = ""
            self.matched = True
            return text[:start], True
        keep = self._partial_suffix_length(text)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Release held-back text when generation ended for another reason."""
        held, self._held = self._held, ""
        return held

    def _first_match(self, text: str) -> int | None:
        best: tuple[int, int] | None = None  # (end, start) of the earliest-ending match
        for sequence in self.stop:
            start = text.find(sequence)
            if start >= 0 and (best is None or (start + len(sequence), start) < best):
                best = (start + len(sequence), start)
        return None if best is None else best[1]

    def _partial_suffix_length(self, text: str) -> int:
        """Length of the longest end of text that is a proper prefix of some stop sequence."""
        longest = max((len(s) for s in self.stop), default=1) - 1
        for length in range(min(longest, len(text)), 0, -1):
            suffix = text[-length:]
            if any(s.startswith(suffix) for s in self.stop):
                return length
        return 0
