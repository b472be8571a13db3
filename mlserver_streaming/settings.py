"""Typed runtime settings, parsed once from `parameters.extra` at load time."""

from __future__ import annotations

from typing import TypeVar

from mlserver.settings import ModelSettings
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InvalidSettings

SettingsT = TypeVar("SettingsT", bound="RuntimeSettings")


class RuntimeSettings(BaseModel):
    """Base for each runtime's `parameters.extra`; unknown keys are typos, so they fail."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def parse_extra(settings: ModelSettings, cls: type[SettingsT]) -> SettingsT:
    """Validate `parameters.extra` into `cls`, failing the load with a readable message."""
    extra = (settings.parameters.extra if settings.parameters else None) or {}
    try:
        return cls.model_validate(extra)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r})"
            for e in err.errors()
        )
        raise InvalidSettings(
            f"model {settings.name!r}: invalid parameters.extra: {problems}"
        ) from err
