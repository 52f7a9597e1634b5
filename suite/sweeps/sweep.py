"""A sweep typed on the command line -> the ``spec.toml`` it stands for.

``perceiver-suite sweep --preset digits model.num_latents=8,16 --seeds 0,1 train.steps=30
--out DIR`` is a spec written out: one value goes to ``[fixed]``, a comma list to
``[grid]``, ``--zip`` lists to ``[zip]``. Each value is parsed as ``train``'s overrides
parse it (``suite.config.overrides``), so the spec holds typed values (``[8, 16]``, not
strings) and a quick sweep becomes a file anyone can rerun with ``run DIR/spec.toml``.

Where a key's value itself holds commas (a tuple such as ``data.index_dims=8,8``, a
per-modality table ``model.fourier_bands=video=32,audio=64``), ``;`` separates its values
(``'data.index_dims=8,8;16,16'``, or ``8x8,16x16``); a string with commas is one value
when a ``;`` follows it (``'train.mesh=data=-1,fsdp=2;'``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tempfile
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from suite import config as cfg_lib
from suite.config.tables import is_table_value
from suite.config.validation import is_table, is_union
from suite.errors import SpecError, SuiteError
from suite.sweeps import record
from suite.sweeps import spec as spec_lib

SPEC_FILE = "spec.toml"
NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def comma_is_part_of_value(key: str, text: str) -> bool:
    """Does a comma in ``text`` belong to one value of ``key`` (a tuple, a table)
    rather than separate several values?"""
    tp = cfg_lib.field_type(key)
    arms = [a for a in typing.get_args(tp) if a is not type(None)] if is_union(tp) else [tp]
    if any(is_table(a) for a in arms) and ("=" in text or ":" in text):
        return True
    tuples = any(typing.get_origin(a) is tuple and not is_table(a) for a in arms)
    return tuples and not all("x" in part for part in text.split(","))  # 8x8,16x16: two


def split_values(key: str, text: str) -> list[str]:
    """``"8,16"`` -> ``["8", "16"]``; ``;`` separates values that hold commas themselves."""
    if ";" in text:
        return [v for v in (p.strip() for p in text.split(";")) if v]
    if "," in text and not comma_is_part_of_value(key, text):
        return [v.strip() for v in text.split(",") if v.strip()]
    return [text]


def toml_ready(key: str, text: str) -> Any:
    """One command-line value as the spec holds it: typed as the override parser types it
    (tuples as lists, tables as inline tables); the text itself where a TOML value would
    not read back the same (``none``: TOML has no null)."""
    tp = cfg_lib.field_type(key)
    value = cfg_lib.coerce(key, text, tp)
    plain = _plain(value)
    try:
        same = plain is not None and cfg_lib.coerce(key, plain, tp) == value
    except SuiteError:
        same = False
    return plain if same else text.strip()


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        if is_table_value(value):
            return {k: _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    return value


def parse_seeds(text: str | None) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (default ``[0]``)."""
    if not text:
        return [0]
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SpecError(f"--seeds={text!r} must be comma-separated integers, e.g. 0,1,2") \
            from None


def default_name(out: Path) -> str:
    """The spec's name from its folder: ``results/nl`` -> ``nl``."""
    name = NAME.sub("-", Path(out).absolute().name).strip("-.")
    return name or "sweep"


def table(preset: str, items: Sequence[str], zips: Sequence[str], seeds: list[int],
          name: str, plugins: Sequence[str] = ()) -> dict[str, Any]:
    """The spec as a TOML-ready dict: name, preset, seeds, plugins (``--plugin``s, as
    recorded: absolute paths or module names), [fixed], [grid], [zip]."""
    spec: dict[str, Any] = {"name": name, "preset": preset, "seeds": seeds,
                            "fixed": {}, "grid": {}, "zip": {}}
    if plugins:
        from suite.plugins import resolve

        spec["plugins"] = [resolve(p) for p in plugins]
    seen: dict[str, str] = {}
    for section, entries in (("grid", items), ("zip", zips)):
        for item in entries:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise SpecError(f"{item!r} is not of the form KEY=VALUE[,VALUE...]")
            if key == "seed":
                raise SpecError(f"{item}: seeds are an axis of their own: --seeds 0,1,2")
            if key in seen:
                raise SpecError(f"{key} is given twice ({seen[key]} and {item})")
            seen[key] = item
            values = [toml_ready(key, v) for v in split_values(key, text)]
            if section == "zip":
                spec["zip"][key] = values
            elif len(values) == 1:
                spec["fixed"][key] = values[0]
            else:
                spec["grid"][key] = values
    return spec


def to_toml(spec: dict[str, Any], command: str = "") -> str:
    """The dict as TOML text, every key quoted as the committed specs quote theirs. Keys
    a spec does not have are written too, for ``spec.load`` to name (a spec given as a
    dict, ``suite.api.run``)."""
    lines = [f"# {command}", ""] if command else []
    tables = [k for k in dict.fromkeys([*spec_lib.SECTIONS, "report", *spec])
              if isinstance(spec.get(k), dict)]
    head = [k for k in dict.fromkeys(["name", "description", "preset", "seeds", "plugins",
                                      *spec]) if k in spec and k not in tables]
    bare = lambda k: k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)  # noqa: E731
    lines += [f"{bare(k)} = {_toml(spec[k])}" for k in head]
    for section in tables:
        if spec[section]:
            lines += ["", f"[{bare(section)}]"]
            lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in spec[section].items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else "inf" if value > 0 else "-inf") \
            if not math.isfinite(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML's (non-ASCII as \uXXXX)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def check(text: str, *, max_runs: int | None,
          at: Path | None = None) -> tuple[spec_lib.Spec, list[spec_lib.Run]]:
    """The spec the text describes (as if it were the file ``at``) and its runs, loaded
    and expanded as ``run`` would (every run validated); mistakes name the key, not the
    scratch file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SPEC_FILE
        path.write_text(text)
        try:
            spec = spec_lib.load(path, max_runs=max_runs)
            runs = spec_lib.expand(spec)
        except SuiteError as e:
            raise type(e)(str(e).replace(str(path), "sweep")) from None
    return dataclasses.replace(spec, path=at or path), runs


def first_difference(old: spec_lib.Spec, new: spec_lib.Spec) -> str | None:
    """The first key two specs disagree on, in words, or None if they describe one sweep."""
    for key in ("name", "preset", "seeds", "description", "plugins", "report"):
        a, b = getattr(old, key, None), getattr(new, key, None)
        if a != b:
            return f"{key} is {_show(a)} there, {_show(b)} here"
    where_old, where_new = _placed(old), _placed(new)
    for key in [*where_old, *(k for k in where_new if k not in where_old)]:
        a, b = where_old.get(key), where_new.get(key)
        if a != b:
            return f"{key} is {_placed_text(a)} there, {_placed_text(b)} here"
    return None


def _placed(spec: spec_lib.Spec) -> dict[str, tuple[str, Any]]:
    return {k: (s, v) for s in spec_lib.SECTIONS for k, v in getattr(spec, s).items()}


def _placed_text(at: tuple[str, Any] | None) -> str:
    return "absent" if at is None else f"[{at[0]}] {_show(at[1])}"


def _show(value: Any) -> str:
    return _toml(list(value) if isinstance(value, tuple) else value) if value != "" else "''"


def write(out: Path, text: str, *, force: bool) -> Path:
    """``out/spec.toml``: written, or kept if it holds this sweep already; a differing one
    is refused (one line naming the first differing key) unless ``force``."""
    record.check_out(out)
    path = Path(out) / SPEC_FILE
    if path.exists():
        new, _ = check(text, max_runs=None)
        try:
            old = spec_lib.load(path, max_runs=None)
            differs = first_difference(old, new)
        except SuiteError as e:
            differs = f"it does not load ({e})"
        if differs is None:
            return path
        if not force:
            raise SpecError(f"{path} holds another sweep: {differs}; choose another --out, "
                            "or --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
