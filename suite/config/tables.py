"""Per-modality tables: a field's value, or sorted (modality, value) pairs."""

from __future__ import annotations

from typing import Any


def table_get(value: Any, modality: str, default: Any = None) -> Any:
    """A field's value for one modality: the table's entry, or the plain value itself."""
    if isinstance(value, tuple) and value and isinstance(value[0], tuple) and \
            len(value[0]) == 2 and isinstance(value[0][0], str):
        return dict(value).get(modality, default)
    return default if value is None else value


def is_table_value(value: Any) -> bool:
    return isinstance(value, tuple) and bool(value) and all(
        isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value)
