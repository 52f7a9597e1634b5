"""Configs: the schema (frozen dataclasses), presets, ``key=value`` overrides, validation.

``from suite import config`` gives the whole public interface; the modules behind it
are ``schema`` (the dataclasses), ``presets``, ``overrides`` and ``validation``.
"""

from suite.config.overrides import (
    apply_overrides,
    build,
    coerce,
    field_type,
    from_dict,
    parse_overrides,
    unknown_key_error,
)
from suite.config.presets import DEFAULT_PRESET, PRESETS, preset
from suite.config.schema import (
    DERIVED_KEYS,
    SECTIONS,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    flatten,
    known_keys,
    non_default,
    to_dict,
)
from suite.config.validation import resolve, validate
from suite.errors import ConfigError

__all__ = [
    "DEFAULT_PRESET", "DERIVED_KEYS", "PRESETS", "SECTIONS", "Config", "ConfigError",
    "DataConfig", "ModelConfig", "TrainConfig", "apply_overrides", "build", "coerce",
    "field_type", "flatten", "from_dict", "known_keys", "non_default", "parse_overrides",
    "preset", "resolve", "to_dict", "unknown_key_error", "validate",
]
