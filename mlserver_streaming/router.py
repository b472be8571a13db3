"""A/B routing: each `user_id` sticks to one version of a model, split by configured weights.

MLServer has no public way for one model to call another, so the router loads its
targets itself: `parameters.extra.targets` names their model folders (each holding a
model-settings.json, relative to the router's own folder) and the router builds and loads
those runtimes in-process, alongside the copies MLServer serves directly.

A user goes to a bucket, sha256(salt + ":" + user_id) mod 10,000, and each target owns a
run of buckets proportional to its weight: the same user always gets the same version,
and changing one weight moves only the users between the old and the new boundary.
Requests without `user_id` go to `default_version` if configured and are refused
otherwise, so anonymous traffic never skews an experiment silently. Every response says
who served it: `model_version` plus the parameters `served_model`, `served_version` and
`ab_bucket`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from bisect import bisect_right
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from mlserver import MLModel
from mlserver.repository.load import load_model_settings
from mlserver.repository.repository import DEFAULT_MODEL_SETTINGS_FILENAME
from mlserver.types import InferenceRequest, InferenceResponse, Parameters
from mlserver.utils import to_absolute_path
from pydantic import Field

from .errors import InvalidParameter, InvalidSettings
from .events import ParamValue, stream_requests
from .params import RESERVED_KEYS, request_parameters
from .serving import check_streaming_server
from .settings import RuntimeSettings, parse_extra

PARAM_USER_ID = "user_id"
PARAM_SERVED_MODEL = "served_model"
PARAM_SERVED_VERSION = "served_version"
PARAM_BUCKET = "ab_bucket"
BUCKETS = 10_000


class RouteTarget(RuntimeSettings):
    """One version the router may send users to."""

    folder: str = Field(min_length=1)
    """Folder holding the target's model-settings.json, relative to the router's folder."""

    weight: float = Field(gt=0, le=1e6)
    """Relative share of users (0 < weight <= 1e6); shares are weight / sum of weights."""


class RouterSettings(RuntimeSettings):
    """`parameters.extra` of the A/B router."""

    targets: list[RouteTarget] = Field(min_length=1)
    """The versions to split users over, each a distinct `parameters.version`."""

    salt: str | None = None
    """Mixed into the hash (default: the router's name); changing it reshuffles all users."""

    default_version: str | None = None
    """Version that serves requests without `user_id`; unset (default) refuses them."""


def bucket_of(user_id: str, salt: str) -> int:
    """The user's bucket in [0, BUCKETS): stable across processes, machines and releases."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


class Routes:
    """Buckets → versions: each version owns a run of buckets proportional to its weight."""

    def __init__(self, versions: Sequence[str], weights: Sequence[float]):
        total = sum(weights)
        self.versions = list(versions)
        self._ends = [round(BUCKETS * c / total) for c in accumulate(weights)]

    def version_for(self, bucket: int) -> str:
        """The version that owns `bucket`."""
        return self.versions[bisect_right(self._ends, bucket)]


def user_id_of(params: dict[str, Any]) -> str | None:
    """The request's `user_id` as a string (gRPC clients may send an int64), or None."""
    value = params.get(PARAM_USER_ID)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise InvalidParameter(
            f"{PARAM_USER_ID} must be a non-empty string or an integer, got {value!r}."
        )
    return str(value)


def without_user_id(payload: InferenceRequest) -> InferenceRequest:
    """The request as the target sees it: `user_id` is the router's, not the model's."""
    if payload.parameters is None:
        return payload
    kept = payload.parameters.model_dump(exclude_none=True)
    kept.pop(PARAM_USER_ID, None)
    return payload.model_copy(update={"parameters": Parameters(**kept)})


@dataclass(frozen=True)
class Decision:
    """Where one request goes, and the parameters that tell the client so."""

    target: MLModel
    tags: dict[str, ParamValue]


async def load_target(router_settings: Any, folder: str) -> MLModel:
    """Build and load the runtime whose model-settings.json lives in `folder`."""
    path = os.path.join(to_absolute_path(router_settings, folder), DEFAULT_MODEL_SETTINGS_FILENAME)
    if not os.path.isfile(path):
        raise InvalidSettings(f"router {router_settings.name!r}: no model settings at {path}.")
    settings = await asyncio.to_thread(load_model_settings, path)
    model = settings.implementation(settings)
    model.ready = await model.load()
    return model


class ABRouter(MLModel):
    """Sends each user's requests to one fixed version of a model, split by weights."""

    async def load(self) -> bool:
        check_streaming_server(self, streaming_only=False)
        self._extra = parse_extra(self.settings, RouterSettings)
        self._targets: dict[str, MLModel] = {}
        try:
            for target in self._extra.targets:
                await self._add_target(await load_target(self.settings, target.folder))
        except BaseException:
            await self.unload()  # no half-loaded router keeps its targets' batchers running
            raise
        versions = list(self._targets)
        self._routes = Routes(versions, [t.weight for t in self._extra.targets])
        default = self._extra.default_version
        if default is not None and default not in self._targets:
            await self.unload()
            raise InvalidSettings(
                f"router {self.name!r}: default_version must be one of {versions}, got {default!r}."
            )
        first = self._targets[versions[0]]
        self.inputs = self.settings.inputs or first.settings.inputs
        self.outputs = self.settings.outputs or first.settings.outputs
        return True

    async def _add_target(self, model: MLModel) -> None:
        if not model.version or model.version in self._targets:
            await model.unload()
            raise InvalidSettings(
                f"router {self.name!r}: each target needs its own parameters.version; "
                f"got {model.version!r} for {model.name!r}, already have {list(self._targets)}."
            )
        self._targets[model.version] = model

    async def unload(self) -> bool:
        targets = getattr(self, "_targets", {})
        await asyncio.gather(*(model.unload() for model in targets.values()))
        targets.clear()
        return True

    def decide(self, payload: InferenceRequest) -> Decision:
        """Pick the target of one request (raises InvalidParameter without a usable user_id)."""
        user_id = user_id_of(request_parameters(payload))
        if user_id is None:
            if self._extra.default_version is None:
                raise InvalidParameter(
                    f"parameter {PARAM_USER_ID!r} is required to choose a version "
                    f"({' or '.join(self._targets)}); got parameters "
                    f"{sorted(set(request_parameters(payload)) - RESERVED_KEYS)}."
                )
            return self._decision(self._extra.default_version, bucket=None)
        bucket = bucket_of(user_id, self._extra.salt or self.name)
        return self._decision(self._routes.version_for(bucket), bucket)

    def _decision(self, version: str, bucket: int | None) -> Decision:
        target = self._targets[version]
        tags: dict[str, ParamValue] = {
            PARAM_SERVED_MODEL: target.name,
            PARAM_SERVED_VERSION: version,
        }
        if bucket is not None:
            tags[PARAM_BUCKET] = bucket
        return Decision(target, tags)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        decision = self.decide(payload)
        response = await decision.target.predict(without_user_id(payload))
        return self._relabel(response, decision.tags)

    def predict_stream(
        self, payloads: AsyncIterator[InferenceRequest]
    ) -> AsyncIterator[InferenceResponse]:
        return stream_requests(self, payloads, self._route_one)

    async def _route_one(
        self, payload: InferenceRequest, tags: dict[str, ParamValue]
    ) -> AsyncIterator[InferenceResponse]:
        """One request of a stream, through its target (whose errors are its own events)."""
        decision = self.decide(payload)
        served = {**decision.tags, **tags}
        async for item in decision.target.predict_stream(_one(without_user_id(payload))):
            yield self._relabel(item, served)

    def _relabel(
        self, response: InferenceResponse, tags: dict[str, ParamValue]
    ) -> InferenceResponse:
        """The target's response as the router's: its name, plus who served it."""
        params = response.parameters.model_dump(exclude_none=True) if response.parameters else {}
        return response.model_copy(
            update={"model_name": self.name, "parameters": Parameters(**{**params, **tags})}
        )


async def _one(payload: InferenceRequest) -> AsyncIterator[InferenceRequest]:
    yield payload
