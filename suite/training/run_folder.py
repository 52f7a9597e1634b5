"""The run folder's files: config.json, metrics.jsonl, summary.json, extended.json,
attempts set aside.

A run folder is the unit of truth. These helpers never delete what a run produced:
metric lines are dropped only past a step that was restored (they are recomputed
bit-identically), and a failed attempt that is retried from scratch is renamed, not
removed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

from suite import config as cfg_lib
from suite.config import Config, TrainConfig
from suite.errors import CheckpointError, ConfigError, SuiteError
from suite.files import (
    append_jsonl,
    drop_torn_line,
    read_json,
    read_json_object,
    read_jsonl,
    write_json_atomic,
    write_text_atomic,
)

CONFIG, METRICS, SUMMARY = "config.json", "metrics.jsonl", "summary.json"
EXTENDED = "extended.json"  # train.steps raised on a completed run: when, from, to
CHECKPOINTS = "checkpoints"


def read_config(path: Path) -> Config:
    """A run folder's config.json as a Config: one line naming the file where it is not
    JSON, not a JSON object, or not a valid config."""
    data = read_json_object(path)
    try:
        return cfg_lib.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


GRID_MARKS = ("grid.json", "spec.toml", "results.csv", "runs")  # what `run`/`sweep` write


def check_config(workdir: Path, config: Config, *, primary: bool = True) -> str | None:
    """Refuse a folder that holds a run of another config, but one change: a completed
    run with a constant learning rate may go on for more steps (``train.steps`` raised),
    since its schedule to date is the same. That run is extended in place (the record in
    ``extended.json``, its summary set aside, config.json rewritten by the ``primary``
    process) and resumes from its last checkpoint; what was done is returned, for the log.
    """
    if workdir.exists() and not workdir.is_dir():
        raise CheckpointError(f"{workdir}: a file, not a run folder; use another --workdir")
    marks = [m for m in GRID_MARKS if (workdir / m).exists()]
    if marks:  # a run started here would sit among the grid's files and break its report
        raise CheckpointError(f"{workdir} is a results folder of a grid (it holds {marks[0]}); "
                              f"train one of its runs: {workdir / 'runs'}/<id>")
    path = workdir / CONFIG
    if not path.exists():
        return None
    try:
        existing = read_config(path)
    except SuiteError as e:
        raise CheckpointError(f"{e} (an unreadable config); move the folder away") from None
    if existing == config:
        return None
    flat_old, flat_new = cfg_lib.flatten(existing), cfg_lib.flatten(config)
    diff = [k for k in flat_new if flat_old.get(k) != flat_new[k]]
    k = diff[0] if diff else "?"
    refusal = (f"{workdir} holds a run with another config ({k}={flat_old.get(k)!r} there, "
               f"{flat_new.get(k)!r} here)")
    why_not = (_why_not_extended(workdir, existing.train, config.train)
               if diff == ["train.steps"] else "")
    if diff != ["train.steps"] or why_not:
        raise CheckpointError(f"{refusal}{why_not}; use another --workdir")
    old, new = existing.train.steps, config.train.steps
    if primary:
        _extend(workdir, config, old)
    return (f"extending the completed run from {old} to {new} steps (a constant learning "
            f"rate: the schedule so far is unchanged); recorded in {EXTENDED}")


def _why_not_extended(workdir: Path, old: TrainConfig, new: TrainConfig) -> str:
    """Why raising ``train.steps`` cannot extend this run in place ("" if it can)."""
    if new.steps < old.steps:
        return "; train.steps may be raised (a run extended), not lowered"
    if old.schedule != "constant":
        return (f"; only a run with train.schedule='constant' is extended in place (this "
                f"one's {old.schedule!r} schedule depends on train.steps)")
    summary = read_summary(workdir) or {}
    resumed = any(e.get("to_step") == new.steps for e in read_extensions(workdir)[-1:])
    if summary.get("status") != "completed" and not (resumed and not summary):
        shown = summary.get("status", "unfinished")
        return (f"; only a completed run is extended in place (this one is {shown}: finish "
                "it with its own config first)")
    if summary and summary.get("step", old.steps) < old.warmup_steps:
        return f"; its warmup of {old.warmup_steps} steps is not done"
    return ""


def _extend(workdir: Path, config: Config, old_steps: int) -> None:
    """Each step is idempotent, so a kill between them is finished by the same command."""
    entries = read_extensions(workdir)
    entry = {"from_step": old_steps, "to_step": config.train.steps}
    if not entries or {k: entries[-1].get(k) for k in entry} != entry:
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        write_json_atomic(workdir / EXTENDED, [*entries, {**entry, "when": when}])
    if (read_summary(workdir) or {}).get("status") == "completed":
        set_aside_summary(workdir, "extended")
    write_json_atomic(workdir / CONFIG, cfg_lib.to_dict(config))


def read_extensions(workdir: Path) -> list[dict[str, Any]]:
    """The run's extensions in place, oldest first: from_step, to_step, when (UTC)."""
    path = workdir / EXTENDED
    return read_json(path) if path.exists() else []


def plugin_changes(workdir: Path, log: Any = None) -> list[str]:
    """One line per plugin ``config.json`` records whose file has changed since the run
    started (``suite.plugins``), each also given to ``log``."""
    from suite import plugins

    try:
        recorded = read_json(workdir / CONFIG).get("plugins") or []
    except (OSError, ValueError, AttributeError):
        return []
    lines = plugins.changed(recorded)
    for line in lines if log else ():
        log(line)
    return lines


def write_config(workdir: Path, config: Config) -> None:
    if not (workdir / CONFIG).exists():
        write_json_atomic(workdir / CONFIG, cfg_lib.to_dict(config))


def read_summary(workdir: Path) -> dict[str, Any] | None:
    path = workdir / SUMMARY
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {"status": "failed", "reason": f"{path} is unreadable"}


def write_summary(workdir: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(workdir / SUMMARY, summary)


def diverged(summary: dict[str, Any]) -> bool:
    """Did this failed run fail by a non-finite loss (not a crash or a data error)?"""
    return summary.get("failure") == "diverged" or str(summary.get("reason", "")).startswith(
        "non-finite loss")


def set_aside_attempt(workdir: Path) -> tuple[int, list[str]]:
    """Rename a failed attempt's files with suffix ``_failed_K`` (next free K).

    ``checkpoints/`` -> ``checkpoints_failed_K/``, ``metrics.jsonl`` ->
    ``metrics_failed_K.jsonl``, ``summary.json`` -> ``summary_failed_K.json``, and
    TensorBoard's event files into ``events_failed_K/``.
    """
    k = 1
    while any((workdir / _aside(name, k)).exists() for name in (CHECKPOINTS, METRICS, SUMMARY)):
        k += 1
    moved = []
    for name in (CHECKPOINTS, METRICS, SUMMARY):
        if (workdir / name).exists():
            shutil.move(str(workdir / name), workdir / _aside(name, k))
            moved.append(_aside(name, k))
    events = sorted(workdir.glob("events.out.tfevents.*"))  # TensorBoard's, if any
    if events:
        (workdir / f"events_failed_{k}").mkdir()
        for path in events:
            shutil.move(str(path), workdir / f"events_failed_{k}" / path.name)
        moved.append(f"events_failed_{k}/")
    return k, moved


def prepare_retry(workdir: Path, summary: dict[str, Any]) -> str:
    """Set a failed attempt aside for ``--retry-failed``; what was done, for the log."""
    if summary.get("status") == "does_not_fit":
        set_aside_summary(workdir, "does_not_fit")
        return "it did not fit before; checking again"
    if diverged(summary):
        _, moved = set_aside_attempt(workdir)
        return (f"it diverged before; starting again from step 0 (the failed attempt is kept "
                f"as {', '.join(moved)})")
    set_aside_summary(workdir, "failed")
    return f"it failed before ({summary.get('reason', '?')}); retrying from its newest checkpoint"


def set_aside_summary(workdir: Path, why: str) -> Path:
    """Rename ``summary.json`` to ``summary_<why>_K.json`` (next free K), to retry the run."""
    k = 1
    while (workdir / f"summary_{why}_{k}.json").exists():
        k += 1
    target = workdir / f"summary_{why}_{k}.json"
    os.replace(workdir / SUMMARY, target)
    return target


def _aside(name: str, k: int) -> str:
    stem, dot, ext = name.partition(".")
    return f"{stem}_failed_{k}{dot}{ext}"


class MetricsLog:
    """``metrics.jsonl``: one JSON line per logged step (train rows and eval rows)."""

    def __init__(self, workdir: Path):
        self.path = workdir / METRICS

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def drop_torn(self) -> int:
        """Drop a torn last line before anything is appended; the bytes dropped."""
        return drop_torn_line(self.path)

    def append(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path, row)

    def truncate_to(self, step: int) -> None:
        """Drop lines past ``step`` (a restored step: they are recomputed identically)."""
        rows = self.rows()
        keep = [r for r in rows if r.get("step", 0) <= step]
        if len(keep) != len(rows):
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def set_aside(self, name: str) -> Path | None:
        """Rename the file to ``name`` beside it (kept, never deleted)."""
        if not self.path.exists():
            return None
        target = self.path.with_name(name)
        shutil.move(str(self.path), target)
        return target

    def last(self, key: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.rows()) if key in r), None)
