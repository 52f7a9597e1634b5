"""Optional dependencies of some tasks' files (``suite.tasks.EXTRAS``), checked before a
task's data is read: a missing one stops the command with one line naming the extra to
install, not with an ImportError deep in a loader worker."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from suite.errors import MissingExtraError
from suite.tasks import EXTRAS, needed_extras


def install_line(extras: Sequence[str]) -> str:
    return f"pip install 'perceiver-suite[{','.join(extras)}]'"


def installed(extra: str) -> bool:
    """Whether the extra's module is there, found without importing it (librosa, with
    numba, takes seconds to import)."""
    try:
        return importlib.util.find_spec(EXTRAS[extra][0]) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without spec
        return False


def require(data) -> None:
    """Stop before reading the task of ``data`` (a ``DataConfig``) when an extra it needs
    is missing: a MissingExtraError naming the task, the modules and the install line."""
    missing = [e for e in needed_extras(data) if not installed(e)]
    if missing:
        what = " and ".join(f"{EXTRAS[e][0]} ({EXTRAS[e][1]})" for e in missing)
        are = "are" if len(missing) > 1 else "is"
        raise MissingExtraError(f"{data.task} needs {what}, which {are} not installed: "
                                f"{install_line(missing)}")


def module(extra: str) -> ModuleType:
    """The extra's module, imported; a MissingExtraError (one line) when it does not
    import, for readers reached without ``require`` (a raw file given to predict)."""
    name, what = EXTRAS[extra]
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingExtraError(f"{name} ({what}) does not import ({e}): "
                                f"{install_line([extra])}") from None
