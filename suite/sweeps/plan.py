"""A grid before it trains: a spec (a file, or a dict written to ``OUT/spec.toml``) with
its overrides, expanded and validated, its results folder, and the experiment recorded
there. ``perceiver-suite run`` and ``suite.api.run`` both start here, so a grid named
either way lands in the same folder with the same record.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from suite import config as cfg_lib
from suite.errors import SpecError, SuiteError
from suite.sweeps import record
from suite.sweeps import spec as spec_lib


@dataclasses.dataclass(frozen=True)
class Grid:
    """A spec loaded and expanded, with its results folder: what ``run`` trains."""

    spec: spec_lib.Spec
    runs: list[spec_lib.Run]  # every run of the grid (every shard's)
    out: Path
    overrides: dict[str, str]  # as command-line text: the experiment's identity
    out_given: bool  # out was named, not the default results/<name>[+overrides]
    notes: tuple[str, ...] = ()  # varied knobs some cells do not read: their duplicates dropped


def override_text(value: Any) -> str:
    """A typed value as the command line types it: ``(8, 8)`` -> ``"8,8"``, ``True`` ->
    ``"true"``; text stays as it is."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ",".join(f"{k}={override_text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ",".join(override_text(v) for v in value)
    return str(value)


def as_text(overrides: Mapping[str, Any] | Sequence[str] | None) -> dict[str, str]:
    """Overrides as a dict, or ``["key=value", ...]`` as typed, -> ``{key: text}``."""
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = cfg_lib.parse_overrides(list(overrides))
    return {k: override_text(v) for k, v in (overrides or {}).items()}


def plan(spec: str | Path | Mapping[str, Any], *, out: str | Path | None = None,
         overrides: Mapping[str, Any] | Sequence[str] | None = None,
         force: bool = False) -> Grid:
    """Load a spec file (or write a dict's to ``OUT/spec.toml``), apply the overrides and
    expand it, every run validated; nothing trains. Over ``MAX_RUNS`` runs needs ``force``
    (which also replaces an ``OUT/spec.toml`` of another dict spec)."""
    limit = None if force else spec_lib.MAX_RUNS
    if isinstance(spec, Mapping):
        loaded = spec_lib.load(write_spec(spec, out, force), max_runs=limit)
    else:
        loaded = spec_lib.load(spec, max_runs=limit)
    text = as_text(overrides)
    runs, notes = spec_lib.expand_noted(loaded, text)
    folder = Path(out) if out is not None else record.default_out(loaded, text)
    return Grid(loaded, runs, folder, text, out is not None, tuple(notes))


def write_spec(table: Mapping[str, Any], out: str | Path | None, force: bool) -> Path:
    """A spec given as a dict -> ``OUT/spec.toml`` (``OUT``: ``out``, else results/<name>),
    checked first so that a mistake writes nothing (one line naming "spec dict" and the
    key); its plugin files made absolute, relative to the working directory."""
    from suite import plugins as plugin_lib
    from suite.sweeps import sweep as sweep_lib

    table = dict(table)
    if out is None and not isinstance(table.get("name"), str):
        raise SpecError("a spec given as a dict needs a 'name' (its results go to "
                        "results/<name>) or out=")
    if isinstance(table.get("plugins"), list):
        table["plugins"] = [plugin_lib.resolve(p) if isinstance(p, str) else p
                            for p in table["plugins"]]
    folder = Path(out) if out is not None else Path("results") / table["name"]
    table.setdefault("name", sweep_lib.default_name(folder))
    try:
        text = sweep_lib.to_toml(table, command="a spec given as a dict (suite.api.run)")
    except (TypeError, ValueError) as e:
        raise SpecError(f"spec dict: a value is not one a TOML spec can hold ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / sweep_lib.SPEC_FILE
        scratch.write_text(text)
        try:
            spec_lib.expand(spec_lib.load(scratch, max_runs=None if force else
                                          spec_lib.MAX_RUNS))
        except SuiteError as e:
            raise type(e)(str(e).replace(str(scratch), "spec dict")) from None
    return sweep_lib.write(folder, text, force=force)


def claim(grid: Grid, command: str) -> str | None:
    """Record the experiment in ``grid.out`` before anything trains. Returns the note to
    show where these runs are another experiment than the folder's (listed apart in its
    report), or where overrides sent them to a folder of their own; else None."""
    held = record.claim(grid.out, grid.spec, grid.runs, grid.overrides, command)
    said = lambda o: " ".join(f"{k}={v}" for k, v in o.items())  # noqa: E731
    if held is not None and not held.describes(grid.spec.name, grid.overrides):
        what = f"spec {held.name!r}" + (f" with {said(held.overrides)}" if held.overrides
                                        else " as written")
        these = said(grid.overrides) or f"spec {grid.spec.name!r}"
        return (f"note: {grid.out} holds {what}; these runs ({these}) are another experiment, "
                "listed apart in its report")
    if grid.overrides and not grid.out_given:
        return f"overrides make another experiment: results in {grid.out}"
    return None
