"""Torch-free numpy inference for GPT-2-family causal LMs, with a slotted KV cache."""

from .checkpoint import CheckpointError, GPT2Weights, load_weights
from .config import GPT2Config, UnsupportedModelError
from .gpt2 import GPT2Engine
from .kv_cache import KVCache
from .seams import NoFreeSlotError, SequenceTooLongError, SlotError

__all__ = [
    "CheckpointError",
    "GPT2Config",
    "GPT2Engine",
    "GPT2Weights",
    "KVCache",
    "NoFreeSlotError",
    "SequenceTooLongError",
    "SlotError",
    "UnsupportedModelError",
    "load_weights",
]
