"""Models: the Perceiver, its baselines, position encodings, FLOP counts and building
them by name. The names below are imported on first use, so that choosing a model by
name (``suite.extend``, ``suite.models.builtins``) imports no model code."""

from __future__ import annotations

from typing import Any

__all__ = ["abstract_model", "build_model", "count_params", "example_inputs"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from suite.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'suite.models' has no attribute {name!r}")
