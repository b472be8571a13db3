"""OpenAI-compatible routes for the text generators: /v1/models, /v1/completions and
/v1/chat/completions, served by MLServer's custom handlers beside V2."""

from .routes import OpenAIRoutes

__all__ = ["OpenAIRoutes"]
