"""Dotted ``key=value`` overrides, typed by the schema: one coercion for the command line
(strings) and for ablation specs (TOML values).

Kept by hand rather than taken from tyro or ml_collections: both would change the
command line's ``model.num_latents=64`` syntax and neither coerces TOML values and
command-line strings through one path.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from suite import extend, plugins
from suite.config.presets import DEFAULT_PRESET, PRESETS
from suite.config.schema import (
    DERIVED_KEYS,
    SECTIONS,
    VARIANTS,
    Config,
    known_keys,
    section_types,
)
from suite.config.validation import describe_type, is_table, is_union, resolve
from suite.errors import ConfigError, PluginError, did_you_mean

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")




def unknown_key_error(key: str) -> ConfigError:
    return ConfigError(f"unknown config key {key!r}{did_you_mean(key, known_keys())}")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` (a CLI string or a TOML value) to the field type ``tp``."""
    bad = ConfigError(f"{key}={value!r} is not {describe_type(tp)}")
    if is_union(tp):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (
                isinstance(value, str) and value.strip().lower() in ("none", "null"))):
            return None
        arms = [a for a in args if a is not type(None)]
        table = next((a for a in arms if is_table(a)), None)
        if table is not None and _looks_like_table(value):
            return _coerce_table(key, value, table, bad)
        for arm in (a for a in arms if a is not table):
            try:
                return coerce(key, value, arm)
            except ConfigError:
                continue
        raise bad
    if is_table(tp):
        return _coerce_table(key, value, tp, bad)
    if typing.get_origin(tp) is Literal:
        value = value.strip() if isinstance(value, str) else value
        if value not in typing.get_args(tp):
            raise bad
        return value
    if typing.get_origin(tp) is tuple:
        return _coerce_tuple(key, value, typing.get_args(tp)[0], bad)
    scalar = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}.get(tp)
    if scalar is None:
        raise bad
    result = scalar(value)
    if result is None:
        raise bad
    return result


def _looks_like_table(value: Any) -> bool:
    if isinstance(value, Mapping):
        return True
    if isinstance(value, str):
        return "=" in value or ":" in value
    return isinstance(value, list | tuple) and bool(value) and all(
        isinstance(v, list | tuple) and len(v) == 2 and isinstance(v[0], str) for v in value)


def _coerce_table(key: str, value: Any, tp: Any, bad: ConfigError) -> tuple:
    """``{"video": 32}``, ``"video=32,audio=64"`` (tuples as ``2x8x8``) or ``[["video", 32]]``
    -> sorted ``(("audio", 64), ("video", 32))``; ``""`` or ``{}`` is the empty table."""
    item_tp = typing.get_args(typing.get_args(tp)[0])[1]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str):
        text = value.strip().strip("{}")
        pairs = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, v = part.replace(":", "=", 1).partition("=")
            if not sep or not name.strip():
                raise bad
            pairs.append((name.strip(), v.strip()))
    elif isinstance(value, list | tuple):
        pairs = [tuple(v) for v in value]
    else:
        raise bad
    try:
        out = {str(k): coerce(key, v, item_tp) for k, v in pairs}
    except ConfigError:
        raise bad from None
    return tuple(sorted(out.items()))


def _coerce_tuple(key: str, value: Any, item_tp: Any, bad: ConfigError) -> tuple:
    if isinstance(value, str):  # "8,8", "[8, 8]" or "8x8"
        text = value.strip().strip("[]()")
        items = [v for v in text.replace("x", ",").split(",") if v.strip()] if text else []
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    try:  # () is a value too (data.modalities: the task's); validation says where it is not
        return tuple(coerce(key, v, item_tp) for v in items)
    except ConfigError:
        raise bad from None


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""))
        except ValueError:
            return None
    return None


def _to_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _to_str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) else None


def field_type(key: str) -> Any:
    """The type of a dotted key (``seed``, ``section.field``, or a registered variant's
    knob ``model.<variant>.<field>``); ConfigError if unknown."""
    if key == "seed":
        return int
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise unknown_key_error(key)
    variant, dot, knob = name.partition(".")
    if dot and section == "model":
        knobs = extend.knob_types(variant) or {}
        if knob not in knobs:
            raise unknown_key_error(key)
        return knobs[knob]
    hints = section_types(section_types(Config)[section])
    if name not in hints or name == VARIANTS:
        raise unknown_key_error(key)
    return hints[name]


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Set dotted keys (``{"model.num_latents": "64"}``), then resolve and validate."""
    sections: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    top: dict[str, Any] = {}
    knobs: dict[str, dict[str, Any]] = {}  # variant -> its knobs set here
    for key, raw in overrides.items():
        value = coerce(key, raw, field_type(key))
        if key == "seed":
            top["seed"] = value
        else:
            section, _, name = key.partition(".")
            variant, dot, knob = name.partition(".")
            if dot:
                knobs.setdefault(variant, {})[knob] = value
            else:
                sections[section][name] = value
    config = dataclasses.replace(
        config, **top,
        **{s: dataclasses.replace(getattr(config, s), **v) for s, v in sections.items() if v},
    )
    return resolve(_with_knobs(config, knobs) if knobs else config)


def _with_knobs(config: Config, knobs: dict[str, dict[str, Any]]) -> Config:
    """``config`` with variants' knobs set; a knobs dataclass's own check (its
    ``__post_init__``) failing is one line naming the keys."""
    held = dict(config.model.variants)
    for variant, values in knobs.items():
        entry = extend.knob_entry(variant)
        base = held[variant] if variant in held else entry.knobs()
        try:
            held[variant] = dataclasses.replace(base, **values)
        except (ValueError, TypeError) as e:
            shown = ", ".join(f"model.{variant}.{k}={v!r}" for k, v in values.items())
            raise ConfigError(f"{shown}: {e}") from None
    model = dataclasses.replace(config.model, variants=tuple(sorted(held.items())))
    return dataclasses.replace(config, model=model)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["a.b=1", "c=2"]`` -> ``{"a.b": "1", "c": "2"}``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = value
    return out


def build(preset_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """A preset plus overrides, resolved and validated."""
    base = PRESETS.get(preset_name or DEFAULT_PRESET)
    if base is None:
        raise ConfigError(f"unknown preset {preset_name!r}; choose one of: {', '.join(PRESETS)}")
    return apply_overrides(base(), overrides or {})


def from_dict(data: Mapping[str, Any]) -> Config:
    """Inverse of ``to_dict`` (derived keys ignored), validated; the plugins it records
    are loaded first (``suite.extend.load_plugins``). A recorded plugin file no longer
    there is passed over when ``--plugin`` registered the config's names from elsewhere."""
    gone = _load_recorded(data.get("plugins") or [])
    overrides: dict[str, Any] = {}
    for key, value in data.items():
        if key == "plugins":
            continue
        if key == "seed":
            overrides["seed"] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if f"{key}.{k}" not in DERIVED_KEYS:
                    overrides[f"{key}.{k}"] = v
        else:
            raise unknown_key_error(key)
    try:
        return apply_overrides(Config(), overrides)
    except ConfigError:
        if gone:  # the reason the config's names are unknown
            raise PluginError(f"plugin {gone[0]}: no such file (the run's config records it); "
                              "pass --plugin FILE where it is now") from None
        raise


def _load_recorded(recorded: list[Any]) -> list[str]:
    """Load a config's recorded plugins; the files that are gone, not loaded."""
    gone = []
    for item in recorded:
        source = str(item.get("plugin") if isinstance(item, Mapping) else item)
        if plugins.is_file_spec(source) and not Path(source).is_file():
            gone.append(source)
        else:
            extend.load_plugins([source])
    return gone
