"""Whether the server MLServer runs a model in can carry that model's streams.

With `parallel_workers` ≥ 1, MLServer loads models inside its parallel inference pool and
serves them through `ParallelModel`, which forwards `predict` only: `predict_stream`
falls back to MLServer's default and answers the first request of a stream with one
response. Runtimes check at load, so that shows up in the log instead of in a client.
"""

from __future__ import annotations

import logging
import multiprocessing

from mlserver import MLModel
from mlserver.parallel import Worker

from .errors import InvalidSettings

logger = logging.getLogger(__name__)

STREAMING_FIX = 'set "parallel_workers": 0 in settings.json (or MLSERVER_PARALLEL_WORKERS=0)'


def in_parallel_worker() -> bool:
    """Whether this process is one of MLServer's parallel inference workers."""
    # Each worker is a `Worker` process, and `load()` runs inside it (never in the
    # main process, which serves a `ParallelModel` stand-in).
    return isinstance(multiprocessing.current_process(), Worker)


def check_streaming_server(model: MLModel, *, streaming_only: bool) -> None:
    """Refuse to load a streaming-only runtime in a parallel worker; log an error for others.

    Call first in `load()`. Runtimes whose `predict` answers in full (`streaming_only`
    False) keep loading, since their unary calls still work there.
    """
    if not in_parallel_worker():
        return
    problem = (
        f"model {model.name!r} is loading in MLServer's parallel inference pool "
        f"(parallel_workers >= 1), where a stream gets one response, to its first request only"
    )
    if streaming_only:
        raise InvalidSettings(f"{problem}; {type(model).__name__} only streams: {STREAMING_FIX}.")
    logger.error("%s; unary calls still work. To stream, %s.", problem, STREAMING_FIX)
