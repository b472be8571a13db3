"""`GET /playground` and its static files, served from this package (nothing from a CDN).

A mixin of every runtime a page panel talks to (the text generator, the classifier), so the
page exists whenever one of them is loaded. MLServer's custom routes are global and the
first model's answers; the page is the same whichever serves it, and it finds the models
itself (`GET /v1/models`, `GET /v2/classifiers`).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from mlserver.handlers import custom_handler
from starlette.requests import Request
from starlette.responses import Response

from ..errors import StreamingError

PAGE_PATH = "/playground"
ASSET_PATH = "/playground/{asset}"
INDEX = "index.html"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
# The page changes with the package, not per request; a stale cached copy would call routes
# the server no longer has.
HEADERS = {"cache-control": "no-cache"}


class AssetNotFound(StreamingError):
    """A playground file that does not exist."""

    def __init__(self, asset: str):
        super().__init__(f"no playground file {asset!r}; files: {', '.join(assets())}.", 404)


@cache
def assets() -> dict[str, bytes]:
    """Every file the page is made of, by name, read once from the installed package."""
    files = resources.files(__package__)
    return {
        item.name: item.read_bytes()
        for item in files.iterdir()
        if any(item.name.endswith(suffix) for suffix in MEDIA_TYPES)
    }


def asset_response(name: str) -> Response:
    """One file of the page with its media type."""
    body = assets().get(name)
    if body is None:
        raise AssetNotFound(name)
    suffix = name[name.rindex(".") :]
    return Response(body, media_type=MEDIA_TYPES[suffix], headers=HEADERS)


class PlaygroundRoutes:
    """Mixin adding the playground page to a runtime."""

    @custom_handler(rest_path=PAGE_PATH, rest_method="GET")
    async def playground_page(self) -> Response:
        """The page itself."""
        return asset_response(INDEX)

    @custom_handler(rest_path=ASSET_PATH, rest_method="GET")
    async def playground_asset(self, request: Request) -> Response:
        """The page's scripts and style sheet."""
        return asset_response(request.path_params["asset"])
