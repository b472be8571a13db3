"""The classifier's REST routes beside V2: the streamed CSV upload and a list of classifiers.

MLServer adds a model's custom handlers at its load and removes them at its unload, and the
routes are global, so every handler here serves whichever classifier the path names (looked
up in `loaded.CLASSIFIERS`), never `self`. Any loaded classifier's routes answer for all.
"""

from __future__ import annotations

from typing import Any

from mlserver.handlers import custom_handler
from starlette.requests import Request
from starlette.responses import Response

from .csv_upload import classify_csv_response
from .loaded import CLASSIFIERS, Classifier
from .outputs import available_outputs, wire_labels

CSV_PATH = "/v2/models/{model_name}/classify_csv"
CSV_VERSION_PATH = "/v2/models/{model_name}/versions/{model_version}/classify_csv"
LIST_PATH = "/v2/classifiers"


class ClassifierRoutes:
    """Mixin of `StreamingClassifier`: the routes a browser (or curl) needs beside V2."""

    @custom_handler(rest_path=CSV_PATH, rest_method="POST")
    async def classify_csv(self, request: Request) -> Response:
        """Stream predictions for a CSV upload while it arrives (see `csv_upload`)."""
        return classify_csv_response(request)

    @custom_handler(rest_path=CSV_VERSION_PATH, rest_method="POST")
    async def classify_csv_version(self, request: Request) -> Response:
        """The same for one version of the model."""
        return classify_csv_response(request)

    @custom_handler(rest_path=LIST_PATH, rest_method="GET")
    async def list_classifiers(self) -> dict[str, Any]:
        """Every loaded classifier with what a client needs to send it rows."""
        return {"classifiers": [_describe(model) for model in CLASSIFIERS.all()]}


def _describe(model: Classifier) -> dict[str, Any]:
    schema = model.schema
    return {
        "name": model.name,
        "version": model.version,
        "features": schema.n_features,
        "classes": wire_labels(schema.classes).tolist(),
        "outputs": list(available_outputs(schema)),
    }
