"""What code made a result: the suite's version and git commit, and the versions of the
libraries whose changes move numbers. Every run's ``summary.json`` records it; reports
and ``compare`` show it.
"""

from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Any

import suite

LIBRARIES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")


def versions() -> dict[str, str]:
    """``{"jax": "0.10.2", ...}`` for :data:`LIBRARIES` (``"absent"`` where not installed)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def git_state(folder: Path | None = None) -> dict[str, Any]:
    """The commit of the suite's checkout and whether tracked files outside ``results/``
    differ from it (the suite writes its outputs there, which is not a code change);
    ``{"commit": None}`` for an installed copy outside a git work tree."""
    folder = folder or Path(suite.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                 ":(exclude)results")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def record() -> dict[str, Any]:
    """The provenance block of a ``summary.json``: the suite's code, the libraries, and
    every plugin this process loaded (``suite.plugins``: its path and SHA-256)."""
    from suite import plugins

    git = git_state()
    return {"suite_version": suite.__version__, "git_commit": git["commit"],
            "git_dirty": git["dirty"], "versions": versions(),
            "plugins": [p.record() for p in plugins.loaded()]}


def describe(block: dict[str, Any] | None) -> str:
    """``"perceiver-suite 0.1.0 @ 1a2b3c4 (dirty); jax 0.10.2, ..."`` for a page or a log."""
    if not block:
        return "unrecorded"
    commit = block.get("git_commit")
    code = f"perceiver-suite {block.get('suite_version', '?')}" + (
        f" @ {commit[:10]}{' (dirty)' if block.get('git_dirty') else ''}" if commit else "")
    libs = ", ".join(f"{k} {v}" for k, v in (block.get("versions") or {}).items())
    return f"{code}; {libs}" if libs else code
