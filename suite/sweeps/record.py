"""Which experiment a results folder holds: the spec as written, its overrides, its runs.

``OUT/grid.json`` records the spec's whole expanded run set (every shard's runs, before
any of them trains) and ``OUT/spec.toml`` the spec's text, so a report aggregates
exactly that experiment, lists its runs that are missing, and keeps apart any other
run folder found in ``OUT/runs``. A command-line override makes another experiment:
by default it gets a folder of its own, ``results/<name>+<key>=<value>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from suite import config as cfg_lib
from suite.errors import SpecError
from suite.files import read_json, read_json_object, write_json_atomic, write_text_atomic
from suite.sweeps.spec import Run, Spec

RECORD = "grid.json"
SPEC_COPY = "spec.toml"
PLUGINS_LINE = re.compile(r"^plugins\s*=\s*\[[^\]]*\]", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Record:
    """What ``OUT/grid.json`` says: the spec, its overrides and its runs (id -> varied)."""

    name: str
    spec_path: str
    overrides: dict[str, str]
    command: str
    runs: dict[str, dict[str, Any]]  # run id -> its varied values, seed included
    configs: dict[str, dict[str, Any]]  # run id -> its config's keys that differ from defaults

    def describes(self, name: str, overrides: dict[str, str]) -> bool:
        return self.name == name and self.overrides == overrides


def default_out(spec: Spec, overrides: dict[str, str], root: Path = Path("results")) -> Path:
    """``results/<name>``, or ``results/<name>+<key>=<value>...`` with overrides."""
    if not overrides:
        return root / spec.name
    slug = "+".join(f"{k}={v}" for k, v in overrides.items())
    slug = re.sub(r"[^A-Za-z0-9=.,_-]+", "-", slug)
    if len(slug) > 80:
        slug = slug[:60].rstrip("-") + "-" + hashlib.sha256(slug.encode()).hexdigest()[:8]
    return root / f"{spec.name}+{slug}"


def read(out: Path, *, strict: bool = False) -> Record | None:
    """The folder's record, or None where there is none (or one without its run set,
    written before run sets were recorded); ``strict`` (a report): a file that is not a
    JSON object is one line naming it."""
    path = Path(out) / RECORD
    try:
        raw = read_json_object(path) if strict and path.exists() else read_json(path)
        runs = {str(r["id"]): dict(r["varied"]) for r in raw["runs"]}
        configs = {str(r["id"]): dict(r.get("config") or {}) for r in raw["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Record(str(raw.get("name", "")), str(raw.get("spec", "")),
                  {str(k): str(v) for k, v in (raw.get("overrides") or {}).items()},
                  str(raw.get("command", "")), runs, configs)


def claim(out: Path, spec: Spec, runs: list[Run], overrides: dict[str, str],
          command: str) -> Record | None:
    """Record this experiment as the folder's, before anything trains; returns the record
    of the experiment the folder now holds.

    The folder is this experiment's if it records none yet, the same spec with the same
    overrides, or the same spec and these runs have no overrides (an edited spec takes
    its folder back: the runs of its earlier version are listed apart). Otherwise the
    folder stays the other experiment's, and these runs are listed apart in its report.
    """
    check_out(out)
    current = read(out)
    if current is not None and not (current.name == spec.name and (
            current.overrides == overrides or not overrides)):
        return current
    record = Record(spec.name, str(spec.path), dict(overrides), command,
                    {r.id: r.varied for r in runs},
                    {r.id: cfg_lib.non_default(r.config) for r in runs})
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / SPEC_COPY, spec_copy_text(spec, out))
    write_json_atomic(out / RECORD, {
        "name": record.name, "spec": record.spec_path, "overrides": record.overrides,
        "command": command, "runs": [{"id": k, "varied": v, "config": record.configs[k]}
                                     for k, v in record.runs.items()]})
    return record


def spec_copy_text(spec: Spec, out: Path) -> str:
    """The spec's text for ``OUT/spec.toml``: its plugin files relative to ``OUT``, not
    to where the spec was, so ``run OUT/spec.toml`` (and a report expanding it) finds
    them; comments and the rest as written."""
    from suite import plugins as plugin_lib

    text = spec.path.read_text()
    listed = tomllib.loads(text).get("plugins") or []
    if len(listed) != len(spec.plugins):
        return text
    moved = [_relative(resolved, out) if plugin_lib.is_file_spec(p) else p
             for p, resolved in zip(listed, spec.plugins, strict=True)]
    if moved == listed:
        return text
    new = PLUGINS_LINE.sub(lambda _: "plugins = " + json.dumps(moved), text, count=1)
    try:
        return new if tomllib.loads(new).get("plugins") == moved else text
    except tomllib.TOMLDecodeError:
        return text


def _relative(path: str, out: Path) -> str:
    """``path`` relative to the folder ``out`` (absolute where it cannot be: another drive)."""
    try:
        return Path(os.path.relpath(path, Path(out).absolute())).as_posix()
    except ValueError:
        return path


def check_out(out: Path) -> None:
    """A results folder about to be written: refused where it is a file, or a run folder
    (a run's files and a grid's would mix)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"{out}: a file, not a results folder; choose another --out")
    if (out / "config.json").is_file():
        raise SpecError(f"{out}: a run folder (it holds config.json), not a results folder; "
                        "choose another --out")


def from_spec_copy(out: Path) -> Record | None:
    """A record rebuilt from ``OUT/spec.toml`` alone (folders written before run sets were
    recorded): its runs as the spec expands today, or None if it no longer expands."""
    from suite.errors import SuiteError
    from suite.sweeps import spec as spec_lib

    path = Path(out) / SPEC_COPY
    if not path.exists():
        return None
    try:
        spec = spec_lib.load(path, max_runs=None)
        runs = spec_lib.expand(spec)
    except SuiteError:
        return None
    return Record(spec.name, str(path), {}, "", {r.id: r.varied for r in runs},
                  {r.id: cfg_lib.non_default(r.config) for r in runs})
