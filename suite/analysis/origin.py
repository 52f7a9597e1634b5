"""What made a results folder's runs, fact by fact (suite version, git commit, whether
the checkout was dirty, each library's version, plugins, machine, precision), so two
folders can be told apart by the facts that differ rather than by one long string.

Each fact comes from the runs' ``summary.json`` provenance block (``suite.provenance``);
a folder without run folders (committed results) has only the ``code`` column of its
results.csv, which :func:`suite.provenance.describe` wrote and :func:`parse_code` reads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from suite.files import read_json

CODE = re.compile(r"perceiver-suite (?P<version>\S+)(?: @ (?P<commit>\w+)(?P<dirty> \(dirty\))?)?"
                  r"(?:; (?P<libraries>.*))?$")


def facts(block: dict[str, Any] | None) -> dict[str, str]:
    """``{"suite version": "0.1.0", "git commit": "044f4bb419", "git dirty": "false",
    "jax": "0.10.2", ..., "plugin NAME": ...}`` of one run's provenance block."""
    if not block:
        return {}
    out = {"suite version": str(block.get("suite_version", "?"))}
    if commit := block.get("git_commit"):
        out["git commit"] = str(commit)[:10]  # as describe() writes it, so both sources agree
        out["git dirty"] = "true" if block.get("git_dirty") else "false"
    out.update({str(k): str(v) for k, v in (block.get("versions") or {}).items()})
    out.update(plugin_facts(block.get("plugins")))
    return out


def plugin_facts(plugins: Any) -> dict[str, str]:
    """``{"plugin my_variants.py": "sha256 1a2b3c4d5e6f"}``: each plugin a run loaded (as
    ``suite.plugins.Plugin.record`` writes it: plugin, path, sha256), else as written."""
    if plugins is None:
        return {}
    if isinstance(plugins, dict):
        return {f"plugin {k}": _text(v) for k, v in plugins.items()}
    if not isinstance(plugins, list | tuple):
        return {"plugins": _text(plugins)}
    out = {}
    for item in plugins:
        if isinstance(item, dict) and item.get("plugin"):
            sha = item.get("sha256")
            out[f"plugin {item['plugin']}"] = f"sha256 {sha[:12]}" if sha else "loaded"
        else:
            out[f"plugin {_text(item)}"] = "loaded"
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def parse_code(code: Any) -> dict[str, str]:
    """:func:`facts` of a results.csv ``code`` cell (``describe``'s text); {} if unrecorded."""
    match = CODE.match(code.strip()) if isinstance(code, str) else None
    if match is None:
        return {}
    out = {"suite version": match["version"]}
    if match["commit"]:
        out["git commit"] = match["commit"]
        out["git dirty"] = "true" if match["dirty"] else "false"
    for library in (match["libraries"] or "").split(", "):
        name, _, version = library.rpartition(" ")
        if name:
            out[name] = version
    return out


def folder_facts(out: Path, frame: pd.DataFrame) -> dict[str, set[str]]:
    """Each fact's values over the folder's completed runs: from their run folders'
    summary.json, else their ``code``, ``machine`` and ``peak_precision`` columns."""
    found: dict[str, set[str]] = {}
    done = frame[frame["status"] == "completed"] if "status" in frame else frame
    for row in done.to_dict("records"):
        block = None
        summary = Path(out) / "runs" / str(row.get("run_id")) / "summary.json"
        if summary.is_file():
            try:
                block = read_json(summary).get("provenance")
            except (OSError, ValueError, AttributeError):
                block = None
        run = facts(block) if block else parse_code(row.get("code"))
        for column, name in (("machine", "machine"), ("peak_precision", "precision")):
            if isinstance(row.get(column), str) and row[column]:
                run[name] = row[column]
        for name, value in run.items():
            found.setdefault(name, set()).add(value)
    return found


def provenance_differences(a: dict[str, set[str]], b: dict[str, set[str]]) -> list[str]:
    """``"jax: 0.10.2 -> 0.10.3"`` for every fact whose values differ between two folders'
    :func:`folder_facts`."""
    out = []
    for name in dict.fromkeys([*a, *b]):
        va, vb = sorted(a.get(name, ())), sorted(b.get(name, ()))
        if va != vb:
            out.append(f"{name}: {'; '.join(va) or 'unrecorded'} -> "
                       f"{'; '.join(vb) or 'unrecorded'}")
    return out


def mixed_versions(out: Path, facts: dict[str, set[str]]) -> list[str]:
    """``"OUT: its runs ran plugin my_variants.py in 2 versions (sha256 ...; sha256 ...)"``
    for each plugin whose completed runs in one folder (its :func:`folder_facts`) were made
    with different files: a mean over them is not of one code."""
    return [f"{out}: its runs ran {name} in {len(values)} versions ({'; '.join(sorted(values))})"
            for name, values in facts.items()
            if name.startswith("plugin ") and len(values) > 1]
