"""The streaming classifier: a scikit-learn classifier served in chunks, micro-batched."""

from .batcher import MicroBatcher
from .runtime import StreamingClassifier
from .settings import ClassifierSettings

__all__ = ["ClassifierSettings", "MicroBatcher", "StreamingClassifier"]
