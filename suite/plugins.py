"""Loading user code: plugin files, importable modules and installed entry points.

A plugin is Python that registers models or part variants through :mod:`suite.extend`
when it is imported. It is named three ways:

- a file, ``my_variants.py`` (any name ending in ``.py`` or holding a ``/``): relative
  to the spec that lists it (``plugins = [...]``) or to the working directory
  (``--plugin``); imported under a module name of its own, once per process;
- a module, ``my_pkg.variants``: imported as ``import my_pkg.variants`` would;
- an installed package's entry point in the group ``perceiver_suite.plugins``
  (``[project.entry-points."perceiver_suite.plugins"] mine = "my_pkg.variants"``):
  imported the first time the registry is read, in every process; an entry point
  naming a function (``"my_pkg:register"``) has it called with no arguments.

A plugin that does not import is one line naming the file and the exception
(:class:`suite.errors.PluginError`, exit status 2); so is a registration whose knobs
break the contract (:func:`check_knobs`). Every plugin loaded is recorded with
its file's SHA-256 (:func:`loaded`), for a run's ``config.json`` and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import re
import sys
import traceback
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from suite.errors import PluginError, SuiteError

GROUP = "perceiver_suite.plugins"
MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclasses.dataclass(frozen=True)
class Plugin:
    """One loaded plugin: how to load it again, the file it ran and that file's hash."""

    source: str  # an absolute file path, a module name, or "entry-point:NAME"
    path: str | None  # the file imported (None: a namespace package)
    sha256: str | None
    kind: str  # "file", "module" or "entry-point"

    def record(self) -> dict[str, str | None]:
        return {"plugin": self.source, "path": self.path, "sha256": self.sha256}


_LOADED: dict[str, Plugin] = {}  # source -> plugin, in load order
_LOADING: list[Plugin] = []  # the plugins being imported now, outermost first


def loaded() -> list[Plugin]:
    """Every plugin this process has loaded, in order."""
    return list(_LOADED.values())


def current() -> Plugin | None:
    """The outermost plugin being imported now: what a registration is credited to."""
    return _LOADING[0] if _LOADING else None


def of_module(name: str | None) -> Plugin | None:
    """A module that registers while imported the ordinary way (``import my_variants``
    in a script) is a plugin too, loaded again by name; ``__main__``, a notebook's cells
    and the suite's own modules are not."""
    module = sys.modules.get(name or "")
    path = getattr(module, "__file__", None)
    if not name or name == "__main__" or name.split(".")[0] == "suite" or path is None:
        return None
    if name not in _LOADED:
        _LOADED[name] = Plugin(name, path, sha256_of(path), "module")
    return _LOADED[name]


def sha256_of(path: str | Path | None) -> str | None:
    if path is None:
        return None
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def resolve(spec: str, base: str | Path | None = None) -> str:
    """A plugin as it is recorded: an absolute path for a file, else the module name."""
    spec = spec.strip()
    if not is_file_spec(spec):
        if not MODULE.fullmatch(spec):
            raise PluginError(f"plugin {spec!r} is neither a .py file nor a module name")
        return spec
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    path = Path(os.path.normpath(path.absolute()))  # one file, one name: "a/../b.py" is "b.py"
    if not path.is_file():
        raise PluginError(f"plugin {spec}: no such file ({path})")
    return str(path)


def load(spec: str, base: str | Path | None = None) -> Plugin:
    """Import one plugin (once per process); raises PluginError naming it."""
    source = resolve(spec, base)
    if source in _LOADED:
        return _LOADED[source]
    if is_file_spec(source):
        return _import_file(spec, Path(source))
    return _import_module(source)


def _import_file(shown: str, path: Path) -> Plugin:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    name = f"perceiver_suite_plugin_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    plugin = Plugin(str(path), str(path), sha256_of(path), "file")
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"plugin {shown}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and typing look their module up by name
    with _importing(plugin, shown, str(path), drop=name):
        module_spec.loader.exec_module(module)
    return plugin


def _import_module(name: str) -> Plugin:
    with _importing(None, name, None):
        module = importlib.import_module(name)
    path = getattr(module, "__file__", None)
    plugin = Plugin(name, path, sha256_of(path), "module")
    _LOADED[name] = plugin
    return plugin


@contextlib.contextmanager
def _importing(plugin: Plugin | None, shown: str, path: str | None,
               drop: str | None = None) -> Iterator[None]:
    """Run an import as ``plugin`` (registrations are credited to it); any exception
    becomes one line naming the plugin and, where the traceback shows it, the line."""
    if plugin is not None:
        _LOADING.append(plugin)
    try:
        yield
        if plugin is not None:
            _LOADED[plugin.source] = plugin
    except SuiteError:
        _forget(drop)
        raise
    except ModuleNotFoundError as e:
        _forget(drop)
        if path is None and e.name and shown.startswith(e.name):
            raise PluginError(f"plugin {shown}: no such module (a file needs its .py; "
                              "a module must be importable here)") from None
        raise PluginError(_what(shown, path, e)) from None
    except (Exception, SystemExit) as e:  # a SystemExit in user code is theirs too
        _forget(drop)
        raise PluginError(_what(shown, path, e)) from None
    except BaseException:
        _forget(drop)
        raise
    finally:
        if plugin is not None:
            _LOADING.pop()


def _forget(name: str | None) -> None:
    if name:
        sys.modules.pop(name, None)


def _what(shown: str, path: str | None, e: BaseException) -> str:
    """``plugin x.py does not import: NameError: name 'y' is not defined (line 7)``."""
    first = (str(e).strip().splitlines() or [""])[0][:200]
    line = e.lineno if isinstance(e, SyntaxError) else None
    if isinstance(e, SyntaxError):
        first = e.msg
    if line is None and path is not None:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        line = frames[-1].lineno if frames else None
    at = f" (line {line})" if line else ""
    return f"plugin {shown} does not import: {type(e).__name__}: {first}{at}"


def load_entry_points() -> list[Plugin]:
    """Import every installed ``perceiver_suite.plugins`` entry point not loaded yet."""
    found = []
    for ep in importlib.metadata.entry_points(group=GROUP):
        source = f"entry-point:{ep.name}"
        if source in _LOADED:
            continue
        dist = getattr(getattr(ep, "dist", None), "name", None)
        shown = f"{ep.name} = {ep.value!r} (entry point of {dist or 'an installed package'})"
        try:
            where = importlib.util.find_spec(ep.value.split(":")[0].strip())
        except (ImportError, ValueError):
            where = None
        path = where.origin if where is not None else None
        plugin = Plugin(source, path, sha256_of(path), "entry-point")
        with _importing(plugin, shown, None):  # its registrations are credited to it
            target = ep.load()
            if ep.attr and callable(target):
                target()
        found.append(plugin)
    return found


def changed(recorded: list) -> list[str]:
    """One line per plugin of ``recorded`` (a ``config.json``'s ``plugins``) whose file
    differs now from when the run started."""
    now = {p.source: p for p in _LOADED.values()}
    lines = []
    for item in recorded or []:
        if not isinstance(item, dict) or not item.get("sha256"):
            continue
        plugin = now.get(str(item.get("plugin")))
        new = plugin.sha256 if plugin else sha256_of(item.get("path"))
        if new != item["sha256"]:
            lines.append(f"plugin {item.get('path') or item.get('plugin')} changed since the run "
                         f"started (sha256 {item['sha256'][:12]} then, "
                         f"{(new or 'unreadable')[:12]} now); resuming with the code as it "
                         "is now")
    return lines


SCALARS = (int, float, bool, str)


def check_knobs(knobs: Any, what: str) -> None:
    """A frozen dataclass, every field with a default and of a type keys can hold."""
    if not (isinstance(knobs, type) and dataclasses.is_dataclass(knobs)
            and knobs.__dataclass_params__.frozen):
        raise PluginError(f"{what}: knobs={knobs!r} must be a frozen dataclass "
                          "(@dataclasses.dataclass(frozen=True))")
    try:
        hints = typing.get_type_hints(knobs)
    except Exception as e:  # noqa: BLE001 (a name the annotations use is not importable)
        raise PluginError(f"{what}: cannot read the types of knobs {knobs.__name__}: {e}") \
            from None
    for f in dataclasses.fields(knobs):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise PluginError(f"{what}: knob {knobs.__name__}.{f.name} needs a default")
        if not _plain(hints[f.name]):
            raise PluginError(f"{what}: knob {knobs.__name__}.{f.name} has type "
                              f"{hints[f.name]!r}; use int, float, bool, str, a tuple of them, "
                              "a Literal, or one of these | None")


def _plain(tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in SCALARS:
        return True
    if origin is Literal:
        return all(isinstance(a, SCALARS) for a in args)
    if origin is tuple:
        return len(args) == 2 and args[1] is Ellipsis and _plain(args[0])
    if origin in (typing.Union, types.UnionType):  # X | None, int | float
        return all(a is type(None) or _plain(a) for a in args)
    return False
