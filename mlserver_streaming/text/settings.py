"""`parameters.extra` of the text generation runtime, parsed and validated once at load."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field, create_model, model_validator

from ..errors import InvalidParameter, InvalidSettings, ServerAtCapacity
from ..settings import RuntimeSettings
from .sample.params import GenerationParams, normalise, optional_fields


def check_capacity(waiting: int, max_waiting: int, max_running: int) -> None:
    """The one capacity rule, in this process and in Redis mode alike: a request is
    refused (retryable) while `max_waiting` requests wait for a running slot."""
    if waiting >= max_waiting:
        raise ServerAtCapacity(
            f"server at capacity: {waiting} requests waiting "
            f"(max_waiting={max_waiting}, max_running={max_running}); retry later."
        )


class _Defaults(RuntimeSettings):
    """A model's default generation parameters, one optional field per request parameter
    (`GenerationParams`, with its range); a request's own values override them."""

    def values(self) -> dict[str, Any]:
        """The set defaults as typed parameter values (one stop string becomes a tuple)."""
        return normalise(self.model_dump(exclude_none=True))


if TYPE_CHECKING:
    GenerationDefaults = _Defaults
else:
    GenerationDefaults = create_model("GenerationDefaults", __base__=_Defaults, **optional_fields())


class TextGenerationSettings(RuntimeSettings):
    """Limits and defaults of one text generation model (all optional)."""

    max_running: int = Field(16, ge=1, le=256)
    """Sequences decoded together in each step; also the number of KV cache slots."""
    max_waiting: int = Field(64, ge=0, le=100_000)
    """Requests allowed to wait for a slot; past this a request is refused (retryable)."""
    max_prompt_tokens: int | None = Field(None, ge=1)
    """Longest prompt in tokens; default: the context window minus one."""
    max_total_tokens: int | None = Field(None, ge=2)
    """Prompt plus generated tokens of one sequence; default and upper bound: the context window."""
    max_tokens_cap: int = Field(256, ge=1)
    """Largest `max_tokens` a request may ask for."""
    request_timeout_s: float = Field(120.0, gt=0, le=86_400)
    """Deadline of a request from its arrival; a stream past it ends with `timeout`."""
    prefill_chunk_tokens: int = Field(64, ge=1, le=4096)
    """Prompt tokens prefilled per engine step, so a long prompt does not stall others."""
    auto_stream_step: int = Field(16, ge=1, le=4096)
    """For requests with `stream_interval` 0 (auto, the default): tokens go one per event
    while at most this many sequences run, then ceil(running / auto_stream_step) per event.
    Each event costs the server (and the client) about as much CPU as decoding a token at
    full batch, so under load grouping keeps the host from starving the engine; a stream
    still gets an event every two steps or so, while its first text is never held."""
    warmup_tokens: int = Field(4, ge=0, le=64)
    """Tokens generated at load so the first real request pays no cold start (0: off)."""
    blas_threads: int = Field(1, ge=1, le=256)
    """BLAS threads for the engine (process-wide): decode matmuls are small, and more threads
    than free cores make OpenBLAS spin; measured 8-11x slower with 2 threads on 2 busy cores."""
    engine_process: bool = True
    """Run the engine in its own process (vLLM V1's engine core): the engine loop and
    MLServer's event loop are both GIL-bound Python, and in one process they take turns
    (served speed ~0.55x the bare engine). False runs it on a thread of MLServer's process:
    no extra process and memory, but slower under load."""
    gil_switch_interval_ms: float | None = Field(0.2, gt=0, le=100)
    """Python's GIL switch interval in the in-thread mode (process-wide; None keeps Python's
    5 ms): the engine thread and the event loop take turns on the GIL, and a short interval
    lets each token reach its stream sooner (measured +19% served tokens/s at 0.2 ms)."""
    gc_freeze: bool = True
    """After load, move every object alive in the server's process to Python's permanent GC
    generation (`gc.freeze`, process-wide). With MLServer's heap a full collection otherwise
    stalls the event loop, and so every stream, for 40-200 ms every few seconds under load;
    after the freeze it walks only objects made since. The engine process always freezes."""
    prepend_bos: bool | None = None
    """Start every prompt with the model's bos token (as the model saw documents in training);
    None follows the model: a GGUF file's `add_bos_token`, no bos for GPT-2 folders."""
    gguf_file: str | None = Field(None, min_length=1)
    """The `.gguf` file to serve when the model folder holds several (or point
    `parameters.uri` at the file)."""
    threads: int | None = Field(None, ge=1, le=256)
    """llama.cpp threads for a GGUF model; default: the usable cores but one (its threads
    meet at a spinning barrier after every op, so one that loses its core to MLServer's
    process stalls the rest)."""
    kv_unified: bool = False
    """llama.cpp: one KV buffer for every sequence (True) or one per sequence (False, the
    default). Unified runs any mix of sequences in one batch, but each token's attention
    walks the cells of all of them (a 32-slot decode step 1.3x as long at 88M); split
    attends over its own cells only and batches runs of consecutive slots, so the engine
    pads short gaps between decoding slots (engine/seq_runs.py)."""
    prefix_cache: bool = True
    """llama.cpp: a finished sequence's slot keeps its KV cells, and a new prompt takes the
    free slot holding its longest prefix (or copies it from a running one), so a repeated
    system prompt or conversation is not prefilled again. False clears a slot at release:
    no request's cells outlive it (numpy GPT-2 folders have no prefix cache)."""
    resume_retention_s: float = Field(300.0, ge=0, le=86_400)
    """How long a stream's events are kept after its final event, for `resume` (seconds)."""
    resume_max_streams: int = Field(1024, ge=1, le=1_000_000)
    """Ended streams kept for `resume` at most; past it the oldest ended stream goes first
    (live streams are bounded by max_running + max_waiting, and always kept)."""
    resume_max_events: int = Field(4096, ge=1, le=1_000_000)
    """Events kept per stream, more than `max_tokens_cap` (a stream has at most one event
    per token, plus its final one), so a live stream is never trimmed under its readers."""
    redis_url: str | None = Field(None, min_length=1)
    """Redis mode: generate on the workers behind this Redis (`redis://host:port/db`)
    instead of in this server; the environment variable MLSERVER_STREAMING_REDIS_URL sets it
    for every text model. None (default, and no variable): this server's own engine."""
    redis_lease_s: float = Field(10.0, ge=1, le=3600)
    """Redis mode: a job whose worker has not renewed its lease (a heartbeat every third of
    it) for this long is taken over by another worker, from the tokens already sent."""
    defaults: GenerationDefaults = Field(default_factory=GenerationDefaults)
    """Default generation parameters (max_tokens, temperature, top_k, ...); requests override."""

    @model_validator(mode="after")
    def _log_holds_a_whole_stream(self) -> TextGenerationSettings:
        if self.resume_max_events <= self.max_tokens_cap:
            raise ValueError(
                f"resume_max_events must be > max_tokens_cap ({self.max_tokens_cap}): a stream "
                f"has up to one event per token plus its final one, got {self.resume_max_events}"
            )
        return self

    def checked_defaults(self, model_name: str) -> dict[str, Any]:
        """The defaults as typed values, checked like a request's at load: a bad default
        fails the load (InvalidSettings naming the model and the key), not every request."""
        try:
            values = self.defaults.values()
            GenerationParams.from_request({}, values, self.max_tokens_cap)
        except InvalidParameter as err:
            raise InvalidSettings(f"model {model_name!r}: parameters.extra.defaults.{err}") from err
        return values
