"""One request's decoding state: sampler, stopping, detokenizer and stop-sequence matcher.

Pure and engine-agnostic: it takes logits and returns what the client should see next, so
it can be tested without a model and reused by any scheduler.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from ...events import FinishReason
from ..tokenizer import Decoder
from .detokenize import IncrementalDetokenizer
from .params import GenerationParams
from .sampling import Choice, TokenChooser
from .stopping import StoppingCriteria, StopSequenceMatcher


@dataclass
class Delta:
    """What one request's client gets next: text plus the tokens it came from."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[tuple[tuple[int, float], ...]] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    error: str | None = None
    """Set with finish_reason ERROR or TIMEOUT: what went wrong, for the final event."""
    retryable: bool = False

    def extend(self, later: Delta) -> None:
        """Append a later delta of the same request (several deltas sent as one event)."""
        self.text += later.text
        self.token_ids += later.token_ids
        self.logprobs += later.logprobs
        self.top_logprobs += later.top_logprobs
        self.finish_reason, self.error = later.finish_reason, later.error
        self.retryable = later.retryable


def merge(deltas: Sequence[Delta]) -> Delta:
    """One delta holding a whole completion (unary predict)."""
    whole = Delta()
    for delta in deltas:
        whole.extend(delta)
    return whole


class Generation:
    """Turns a request's successive logits into deltas until it finishes."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        tokenizer: Decoder,
        eog_token_ids: Collection[int] = (),
    ) -> None:
        self.prompt_ids = list(prompt_ids)
        self.prefill_ids = self.prompt_ids
        """What the engine prefills: the prompt, then any replayed tokens (`replay`)."""
        self.params = params
        self.completion_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.last_token: int | None = None
        self._chooser = TokenChooser.from_params(params)
        self._stopping = StoppingCriteria.from_params(params, eog_token_ids)
        self._detok = IncrementalDetokenizer(tokenizer, self.prompt_ids)
        self._matcher = StopSequenceMatcher(params.stop)
        # History for the repetition penalty, preallocated: prompt then generated ids.
        self._history = np.empty(len(self.prompt_ids) + params.max_tokens, dtype=np.int64)
        self._history[: len(self.prompt_ids)] = self.prompt_ids
        self._pending = Delta()
        self._sent_text = False

    @property
    def chooser(self) -> TokenChooser:
        """This request's sampler: its processors and its seeded generator."""
        return self._chooser

    @property
    def history(self) -> np.ndarray:
        """Prompt plus generated ids so far: what the repetition penalty looks at."""
        return self._history[: len(self.prompt_ids) + self.completion_tokens]

    def replay(self, token_ids: Sequence[int]) -> None:
        """Continue a generation another engine began (its worker died): take the tokens it
        already sent as if sampled here, and advance the seeded generator past their draws
        (one uniform per sampled token), so what follows is what it would have sent. The
        scheduler then prefills the prompt and the replayed tokens both."""
        self.prefill_ids = [*self.prompt_ids, *token_ids]
        for token in token_ids:
            self.accept(Choice(token, 0.0, ()))
        if self._chooser.rng is not None and token_ids:
            self._chooser.rng.random(len(token_ids))
        self._take()  # the client has these tokens' text already

    def accept(self, choice: Choice, auto_interval: int = 1) -> Delta | None:
        """Take the chosen token (from `chooser` or a batch sampler); return a delta when there
        is text to send or the generation finished, else None (text held back).

        `auto_interval` is the tokens per event when the request left `stream_interval` on
        auto (the scheduler sets it from the load)."""
        token = choice.token_id
        self._history[len(self.prompt_ids) + self.completion_tokens] = token
        self.completion_tokens += 1
        self.last_token = token
        pending = self._pending
        pending.token_ids.append(token)
        if self.params.logprobs is not None:
            pending.logprobs.append(choice.logprob)
            pending.top_logprobs.append(choice.top_logprobs)
        done, reason = self._stopping(token)
        text = "" if reason is FinishReason.EOS else self._detok.step(token)
        safe, stopped = self._matcher.feed(text)
        pending.text += safe
        if stopped:
            return self.finish(FinishReason.STOP)
        if done and reason is not None:
            return self.finish(reason)
        if not pending.text:
            return None  # held back (half a character or a possible stop sequence)
        interval = self.params.stream_interval or auto_interval
        if self._sent_text and len(pending.token_ids) < interval:
            return None  # the first text goes at once; later ones by stream_interval tokens
        self._sent_text = True
        return self._take()

    def finish(
        self, reason: FinishReason, error: str | None = None, retryable: bool = False
    ) -> Delta:
        """End the generation: the last delta, with held-back text unless a stop matched."""
        self.finish_reason = reason
        if reason is not FinishReason.STOP:
            tail, stopped = self._matcher.feed(self._detok.flush())
            self._pending.text += tail if stopped else tail + self._matcher.flush()
        delta = self._take()
        delta.finish_reason, delta.error, delta.retryable = reason, error, retryable
        return delta

    def _take(self) -> Delta:
        delta, self._pending = self._pending, Delta()
        return delta
