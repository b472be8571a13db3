"""The browser playground: a page served by the models' own custom routes (no build step)."""

from .routes import PlaygroundRoutes

__all__ = ["PlaygroundRoutes"]
