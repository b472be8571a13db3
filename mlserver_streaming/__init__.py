"""MLServer runtimes that make streaming inference first-class."""

from .classifier import StreamingClassifier
from .router import ABRouter
from .text.runtime import TextGenerator
from .words import WordStreamModel

__all__ = ["ABRouter", "StreamingClassifier", "TextGenerator", "WordStreamModel"]
