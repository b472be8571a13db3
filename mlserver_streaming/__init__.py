"""MLServer runtimes that make streaming inference first-class."""

from .words import WordStreamModel

__all__ = ["WordStreamModel"]
