"""llama-cpp-python's low-level library, loaded once: logging, GGUF file checks, metadata."""

from __future__ import annotations

import ctypes
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import InvalidSettings

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = "pip install 'mlserver-streaming[llama]'"
_LOG_ERROR, _LOG_CONT = 4, 5  # ggml_log_level: GGML_LOG_LEVEL_ERROR, _CONT

# llama.cpp's recent error lines (its log is silenced), quoted in our load errors.
llama_errors: deque[str] = deque(maxlen=32)


def _keep_errors(level: int, text: bytes | None, _user_data: object) -> None:
    if text and level in (_LOG_ERROR, _LOG_CONT):
        llama_errors.append(text.decode("utf-8", errors="replace").strip())


_lib_cache: list[Any] = []


def llama_lib() -> Any:
    """``llama_cpp.llama_cpp``, with the backend initialised and its stderr logging silenced
    (errors are kept for our messages); raises InvalidSettings if it is not installed."""
    if _lib_cache:
        return _lib_cache[0]
    try:
        import llama_cpp.llama_cpp as lib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InvalidSettings(
            f"GGUF models need llama-cpp-python, which is not installed ({exc}); {INSTALL_HINT}."
        ) from exc
    callback = lib.llama_log_callback(_keep_errors)
    lib.llama_log_set(callback, ctypes.c_void_p(0))
    lib.llama_backend_init()
    _lib_cache.extend([lib, callback])  # the callback must outlive every llama.cpp call
    return lib


def default_threads() -> int:
    """All usable cores but one (at least one). llama.cpp's threads meet at a spinning
    barrier after every op, so a thread that loses its core to another process stalls the
    rest: on 2 cores with a process busy 30% of one core, 2 threads decoded 76 tokens/s
    where 1 thread decoded 1395. A server always has that other process (MLServer's)."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


def check_sizes(**sizes: int) -> None:
    """Each of these engine sizes must be at least 1."""
    for name, value in sizes.items():
        if value < 1:
            raise InvalidSettings(f"{name} must be >= 1, got {value}.")


def context_for(lib: Any, model: Any, path: Path, context_per_slot: int | None) -> int:
    """The context per slot: the model's training context (``n_ctx_train``) unless set,
    and never above it (the model is freed if the setting is out of range)."""
    n_ctx_train = int(lib.llama_model_n_ctx_train(model))
    context = n_ctx_train if context_per_slot is None else context_per_slot
    if not 1 <= context <= n_ctx_train:
        lib.llama_model_free(model)
        raise InvalidSettings(
            f"{path}: the context per slot must be in [1, n_ctx_train={n_ctx_train}] "
            f"(the model's training context), got {context}."
        )
    return context


def check_gguf(path: Path) -> None:
    """Fail with a clear message before llama.cpp sees a file that is not GGUF."""
    if not path.is_file():
        raise InvalidSettings(f"GGUF model file {path} does not exist.")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise InvalidSettings(
            f"{path} is not a GGUF file: it must start with the bytes {GGUF_MAGIC!r}, "
            f"got {magic!r}."
        )


def meta_str(lib: Any, model: Any, key: str) -> str | None:
    """A GGUF metadata value of a loaded model as text, None if the key is absent."""
    buf = ctypes.create_string_buffer(1 << 16)
    n = lib.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    if n < 0:
        return None
    if n >= len(buf):  # truncated: long chat templates
        buf = ctypes.create_string_buffer(n + 1)
        lib.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace")


def load_model(path: Path) -> tuple[Any, Any]:
    """The library and the weights of a GGUF file; a load error that says why if it is
    not GGUF or llama.cpp refuses it."""
    check_gguf(path)
    lib = llama_lib()
    params = lib.llama_model_default_params()
    llama_errors.clear()
    model = lib.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise load_error(path)
    return lib, model


def load_error(path: Path) -> InvalidSettings:
    """Why llama.cpp refused ``path``, with the architecture the file declares."""
    said = " ".join(llama_errors) or "no error message"
    arch = _architecture(path)
    version = getattr(sys.modules.get("llama_cpp"), "__version__", "?")
    if "unknown model architecture" in said:
        return InvalidSettings(
            f"{path}: architecture '{arch}' is not one this llama.cpp (llama-cpp-python "
            f"{version}) can run; llama.cpp said: {said}"
        )
    declared = f" (architecture '{arch}')" if arch else ""
    return InvalidSettings(
        f"llama.cpp (llama-cpp-python {version}) cannot load {path}{declared}: the file is "
        f"damaged or incomplete; llama.cpp said: {said}"
    )


def _architecture(path: Path) -> str | None:
    try:
        import gguf

        field = gguf.GGUFReader(path).get_field("general.architecture")
        return None if field is None else str(field.contents())
    except Exception:  # only for a better message: the load already failed
        return None
