"""Ablation specs: TOML files in ``ablations/`` -> validated, identified runs.

A spec is data, never code (parsed with ``tomllib``)::

    name = "latents"
    preset = "digits"
    seeds = [0, 1, 2]
    [fixed]   "train.steps" = 400           # every run
    [grid]    "model.num_latents" = [8, 16]  # Cartesian product
    [zip]     "model.fourier_bands" = [2, 4] # equal-length lists varied together
              "model.max_resolution" = [4, 8]
    [report]  rows = [...], cols = [...], metric = "eval/accuracy"

Runs = grid x zip x seeds. Every run is resolved and validated before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

from suite import config as cfg_lib
from suite.config import Config
from suite.config.overrides import did_you_mean
from suite.errors import ConfigError, SpecError
from suite.sweeps.report_keys import check_report_keys, check_report_types
from suite.tasks import chosen_location

SECTIONS = ("fixed", "grid", "zip")
TOP_KEYS = {"name", "description", "preset", "seeds", "report", "plugins", *SECTIONS}
MAX_RUNS = 256  # a larger grid needs --force


@dataclasses.dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    description: str
    preset: str
    seeds: tuple[int, ...]
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    zip: dict[str, list[Any]]
    report: dict[str, Any]
    plugins: tuple[str, ...] = ()  # user code loaded first, as resolved (absolute paths)

    @property
    def varied_keys(self) -> list[str]:
        return [*self.grid, *self.zip]


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a grid: its stable id, the values it varies, the resolved config."""

    id: str
    varied: dict[str, Any]
    config: Config


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> dotted keys (``{"model": {"n": 1}}`` -> ``{"model.n": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full not in cfg_lib.known_keys():
            out.update(_flatten(value, full + "."))
        else:  # a value, or a per-modality table a field takes: {video = 32, audio = 64}
            out[full] = value
    return out


def load(path: str | Path, *, max_runs: int | None = MAX_RUNS) -> Spec:
    """Parse and check a spec file (structure, keys, value types); no runs expanded yet."""
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{where}: no such spec file") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{where}: bad TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{where}: cannot read ({e})") from None
    if not raw:  # a file saved empty would otherwise train the default preset
        raise SpecError(f'{where}: the spec is empty; it names at least its preset, e.g. '
                        f'preset = "{cfg_lib.DEFAULT_PRESET}" (see ablations/demo.toml)')
    unknown = set(raw) - TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        hint = did_you_mean(key, TOP_KEYS) or (
            "; config keys go in [fixed], [grid] or [zip]"
            if key in cfg_lib.SECTIONS or key in cfg_lib.known_keys() else "")
        raise SpecError(f"{where}: unknown top-level key {key!r}{hint} (allowed: "
                        f"{', '.join(sorted(TOP_KEYS))})")
    name, preset, seeds = _header(raw, path)
    plugins = _plugins(raw, path)  # before the keys: a variant's knobs are keys too
    sections = _sections(raw, where)
    report = raw.get("report", {})
    check_report_types(where, report)  # before anything trains, not in the report at the end
    check_report_keys(where, report, [*sections["grid"], *sections["zip"]])
    spec = Spec(path, name, str(raw.get("description", "")), preset, tuple(seeds),
                sections["fixed"], sections["grid"], sections["zip"], report, plugins)
    n = count(spec)
    if max_runs is not None and n > max_runs:
        raise SpecError(f"{where}: the grid has {n} runs, over the limit of {max_runs}; "
                        "pass --force to run it anyway")
    return spec


def _header(raw: dict[str, Any], path: Path) -> tuple[str, str, list[int]]:
    """name, preset and seeds, checked."""
    where = str(path)
    name = raw.get("name", path.stem)
    if (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", name)
            or any(part in (".", "..") for part in name.split("/"))):
        raise SpecError(f"{where}: name={name!r} must be a plain string (letters, digits, _.-; "
                        "'/' groups results, e.g. fashion_mnist/latents)")
    preset = raw.get("preset", cfg_lib.DEFAULT_PRESET)
    if not isinstance(preset, str) or preset not in cfg_lib.PRESETS:
        raise SpecError(f"{where}: preset={preset!r} is unknown; choose one of: "
                        f"{', '.join(cfg_lib.PRESETS)}")
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise SpecError(f"{where}: seeds={seeds!r} must be a non-empty list of distinct "
                        "integers >= 0")
    return name, preset, seeds


def _plugins(raw: dict[str, Any], path: Path) -> tuple[str, ...]:
    """``plugins = ["my_variants.py", "pkg.module"]``: files relative to the spec, loaded."""
    from suite import extend, plugins
    from suite.errors import SuiteError

    listed = raw.get("plugins", [])
    if not isinstance(listed, list) or not all(isinstance(p, str) and p for p in listed):
        raise SpecError(f"{path}: plugins={listed!r} must be a list of .py files (relative to "
                        "the spec) or module names")
    try:
        resolved = tuple(plugins.resolve(p, path.parent) for p in listed)
        extend.load_plugins(resolved)
    except SuiteError as e:
        raise SpecError(f"{path}: {e}") from None
    return resolved


def _sections(raw: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """[fixed], [grid] and [zip] as dotted keys, each value type-checked."""
    sections: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    for section in SECTIONS:
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise SpecError(f"{where}: [{section}] must be a table of dotted keys")
        flat = _flatten(table)
        for key, value in flat.items():
            if key in seen:
                raise SpecError(f"{where}: key {key!r} appears in both [{seen[key]}] and "
                                f"[{section}]")
            seen[key] = section
            if key == "seed":
                raise SpecError(f"{where}: [{section}] seed: use the top-level seeds = [...]")
            if section == "fixed":
                _check_value(where, section, key, value)
                continue
            if not isinstance(value, list) or not value:
                raise SpecError(f"{where}: [{section}] {key}={value!r} must be a non-empty "
                                "list of values")
            for v in value:
                _check_value(where, section, key, v)
        sections[section] = flat
    lengths = {k: len(v) for k, v in sections["zip"].items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise SpecError(f"{where}: [zip] lists must have equal lengths ({detail})")
    return sections


def _check_value(where: str, section: str, key: str, value: Any) -> None:
    """Type-check one value against the config field it sets."""
    try:
        cfg_lib.coerce(key, value, cfg_lib.field_type(key))
    except ConfigError as e:
        raise SpecError(f"{where}: [{section}] {e}") from None


def count(spec: Spec) -> int:
    grid = 1
    for values in spec.grid.values():
        grid *= len(values)
    zipped = len(next(iter(spec.zip.values()))) if spec.zip else 1
    return grid * zipped * len(spec.seeds)


def points(spec: Spec) -> list[dict[str, Any]]:
    """The varied values of every run (without the seed), in a stable order."""
    grid_keys = list(spec.grid)
    grid = [dict(zip(grid_keys, combo, strict=True))
            for combo in itertools.product(*(spec.grid[k] for k in grid_keys))]
    zip_len = len(next(iter(spec.zip.values()))) if spec.zip else 1
    zipped = [{k: v[i] for k, v in spec.zip.items()} for i in range(zip_len)]
    return [{**g, **z} for g in grid for z in zipped]


def run_id(varied: dict[str, Any], config: Config) -> str:
    """A readable slug of the varied values plus a short hash of the whole config.

    The hash covers the keys that differ from the schema's defaults, so a config field
    added in a later version (with a default that keeps the old behaviour) leaves the
    ids of existing runs, and their resumable folders, unchanged; and the data location
    ``$PERCEIVER_SUITE_DATA`` chose, where it chose one.
    """
    identity = cfg_lib.non_default(config)
    location = chosen_location(config.data)
    if location:  # $PERCEIVER_SUITE_DATA elsewhere: other data, other runs
        identity["data.location"] = location
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    parts = []
    for key, value in varied.items():
        short = key.rsplit(".", 1)[-1]
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        parts.append(f"{short}={text}".lower())
    slug = re.sub(r"[^a-z0-9=,._-]+", "-", "_".join(parts))[:80].strip("-_")
    return f"{slug}_{digest}" if slug else digest


def expand(spec: Spec, overrides: dict[str, Any] | None = None) -> list[Run]:
    """Every run of the spec (grid x zip x seeds), resolved and validated."""
    return expand_noted(spec, overrides)[0]


def expand_noted(spec: Spec, overrides: dict[str, Any] | None = None
                 ) -> tuple[list[Run], list[str]]:
    """:func:`expand`, and a line for each varied variant knob that some cells do not read.

    A cell whose chosen variant is not the knob's (``model.gated.scale`` where
    ``model.mlp='standard'``) would run once per value of that knob, identical runs;
    only the first (in the spec's order) is kept, so the ids of the kept runs are the
    ones the full product gives them.
    """
    overrides = overrides or {}
    if "seed" in overrides:
        raise SpecError(f"{spec.path}: seed={overrides['seed']}: a spec's runs take their seeds "
                        f"from its seeds = {list(spec.seeds)}; edit that list (or train one "
                        "run with perceiver-suite train ... seed=N)")
    runs: list[Run] = []
    seen: set[str] = set()
    cells: dict[tuple[str, str], list[int]] = {}  # (knob, where) -> [cells, kept]
    for point in points(spec):
        configs = [_config(spec, point, overrides, seed) for seed in spec.seeds]
        unread = {k: w for k in point if (w := unread_where(k, configs[0]))}
        same = json.dumps({k: v for k, v in point.items() if k not in unread},
                          sort_keys=True, default=str)
        kept = same not in seen
        seen.add(same)
        for key, where in unread.items():
            counts = cells.setdefault((key, where), [0, 0])
            counts[0], counts[1] = counts[0] + 1, counts[1] + kept
        if not kept:
            continue
        for seed, config in zip(spec.seeds, configs, strict=True):
            varied = {**point, "seed": seed}
            runs.append(Run(run_id(varied, config), varied, config))
    notes = [f"{key} does not apply where {where}: {kept} cell{'s' * (kept != 1)} instead "
             f"of {total} (identical runs dropped)"
             for (key, where), (total, kept) in cells.items() if kept < total]
    ids = [r.id for r in runs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SpecError(f"{spec.path}: two grid points resolve to the same config ({dup}); "
                        "remove the duplicate values")
    return runs, notes


def _config(spec: Spec, point: dict[str, Any], overrides: dict[str, Any], seed: int) -> Config:
    """One run's config, resolved and validated; a mistake names the run."""
    try:
        return cfg_lib.build(spec.preset, {**spec.fixed, **point, **overrides, "seed": seed})
    except ConfigError as e:
        at = ", ".join(f"{k}={v!r}" for k, v in point.items())
        raise SpecError(f"{spec.path}: {e}" + (f" (in the run {at})" if at else "")) from None


def unread_where(key: str, config: Config) -> str:
    """``"model.mlp='standard'"`` where ``key`` is a variant's knob
    (``model.<variant>.<field>``) and ``config`` chooses another variant for that part,
    so the knob changes nothing; "" where the key is read."""
    from suite import extend

    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "model":
        return ""
    entry = extend.knob_entry(parts[1])
    if entry is None:
        return ""
    field = extend.PARTS[entry.part]
    chosen = getattr(config.model, field)
    return "" if chosen == entry.name else f"model.{field}={chosen!r}"


def shard(runs: list[Run], index: int, total: int) -> list[Run]:
    """A deterministic 1/total of the runs (by sorted id): for cluster job arrays."""
    ordered = sorted(runs, key=lambda r: r.id)
    return [r for i, r in enumerate(ordered) if i % total == index]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"1/4"`` -> ``(1, 4)``: shard I of N, numbered from 0."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError(f"--shard={text!r} must be I/N with integers, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SpecError(f"--shard={text!r}: need 0 <= I < N (shards are numbered from 0)")
    return i, n
