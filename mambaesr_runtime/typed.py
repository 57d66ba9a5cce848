"""Frozen dataclasses from parsed JSON/YAML: the one key check every reader of a config, profile, manifest or trace
shares (spandrel-style typed descriptors instead of nested option dicts). Values are each reader's own business."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .errors import ConfigError


def check_keys(data, cls, where: str) -> dict:
    """``data`` as a dict once it is a mapping with no key ``cls`` lacks and every field without a default present;
    otherwise a :class:`ConfigError` naming ``where`` and listing the valid keys."""
    fields = dataclasses.fields(cls)
    valid = sorted(f.name for f in fields)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of {valid}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; valid keys are {valid}")
    missing = sorted(f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where}: missing keys {missing}")
    return dict(data)


def from_dict(cls, data, where: str, tuple_fields: tuple[str, ...] = ()):
    """``cls(**data)`` after :func:`check_keys`; JSON lists become the tuples ``tuple_fields`` hold."""
    data = check_keys(data, cls, where)
    return cls(**{k: tuple(v) if k in tuple_fields else v for k, v in data.items()})
