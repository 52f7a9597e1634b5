"""A results folder -> the experiment it records: its runs (missing ones too) apart from
every other run folder found there.

The experiment is the run set ``OUT/grid.json`` records (``suite.sweeps.record``): the
spec as written plus its overrides, every shard's runs. Its runs are aggregated; a run
folder outside it (a quick look with ``train.steps=50``, a run of an earlier version of
the spec) is listed apart with what differs, never averaged in. Folders without a
recorded run set expand their ``spec.toml``; folders without either are read whole. A
folder without run folders (committed results: ``runs/`` is not committed) is read from
its ``results.csv``, so its tables and figures can be redrawn from a clone.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from suite import config as cfg_lib
from suite.analysis import inputs
from suite.errors import SuiteError
from suite.sweeps import record as record_lib
from suite.sweeps.results import config_changes, read_results_csv, read_runs, same_text

BOOKKEEPING = {"run_id", "status", "varied", "reason", "step"}
CHANGED = "changed"  # the status of a grid's run whose folder now holds another config
ABSENT = ("missing", CHANGED)  # runs of the grid with no run of theirs to read


@dataclasses.dataclass
class Experiment:
    frame: pd.DataFrame  # one row per run of the experiment; never-started ones "missing"
    others: pd.DataFrame  # other run folders: run_id, status, differs
    knobs: list[str]  # the varied config keys, seed aside, in the spec's order
    record: record_lib.Record | None
    source: str  # where the run set comes from

    @property
    def title(self) -> str:
        if self.record is None:
            return ""
        extra = " ".join(f"{k}={v}" for k, v in self.record.overrides.items())
        return self.record.name + (f" with {extra}" if extra else "")


def load(out: Path) -> Experiment:
    """The experiment of ``out`` and the other run folders there."""
    out = Path(out)
    raw_spec = inputs.read_spec_copy(out)  # a malformed spec.toml: one line, first
    rows = read_runs(out, strict=True)
    rows_from = ""
    if not rows and (rows := read_results_csv(out)):
        rows_from = (f"; each run's final row from {out / 'results.csv'} (no run folders "
                     "here: no learning curves or attention maps)")
    rec = record_lib.read(out, strict=True)  # a grid.json that is no object: one line
    source = f"{out / record_lib.RECORD}"
    if rec is None:
        rec = record_lib.from_spec_copy(out)
        source = f"{out / record_lib.SPEC_COPY} (expanded now: no run set recorded)"
    if rec is None:
        if not rows:
            raise SuiteError(f"{out}: no run folders under {out / 'runs'} (run a spec first: "
                             f"perceiver-suite run SPEC --out {out})")
        inputs.check_report_keys(out, raw_spec, [])
        inputs.check_values(rows, out, from_csv=bool(rows_from))
        frame = tidy(pd.DataFrame(rows))
        return Experiment(frame, _others([], pd.DataFrame()), [], None,
                          "every run folder (no spec recorded)" + rows_from)
    knobs = list(dict.fromkeys(k for v in rec.runs.values() for k in v if k != "seed"))
    inputs.check_report_keys(out, raw_spec, knobs)
    changed = changed_runs(rec, rows)
    mine = [r for r in rows if r["run_id"] in rec.runs and r["run_id"] not in changed]
    inputs.check_values(mine, out, from_csv=bool(rows_from))
    found = {r["run_id"] for r in mine}
    for row in mine:  # knob values as the spec writes them, for every run alike
        row.update(rec.runs[row["run_id"]])
    missing = [{"run_id": i, "status": CHANGED if i in changed else "missing",
                **({"reason": f"{changed[i]}; move {out / 'runs' / i} elsewhere and run the "
                    "spec again to train the grid's run"} if i in changed else {}), **v}
               for i, v in rec.runs.items() if i not in found]
    frame = tidy(pd.DataFrame(mine + missing))
    order = {run_id: i for i, run_id in enumerate(rec.runs)}
    frame = frame.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)
    others = tidy(pd.DataFrame([r for r in rows if r["run_id"] not in rec.runs
                                or r["run_id"] in changed]))
    check_cells(frame, knobs, out)
    return Experiment(frame, _others(_spec_configs(rec, frame), others, changed), knobs, rec,
                      source + rows_from)


def changed_runs(rec: record_lib.Record, rows: list[dict[str, Any]]) -> dict[str, str]:
    """``{run id: "changed since the grid ran: train.steps 20 -> 60"}``: the grid's run
    ids whose folder records another config than the grid's record does for them (a run
    extended in place): not seeds of their cell any more, listed apart."""
    grid = [r for r in rows if rec.configs.get(r["run_id"])]
    usual = _usual_values(grid, rec)
    out = {}
    for row in grid:
        expected = {**usual, **rec.configs[row["run_id"]]}
        diff = config_changes(row, expected, cfg_lib.DERIVED_KEYS)
        if diff:
            out[row["run_id"]] = "changed since the grid ran: " + ", ".join(
                f"{k} {text(a)} -> {text(b)}" for k, a, b in diff[:4]) + (
                f", and {len(diff) - 4} more" if len(diff) > 4 else "")
    return out


def _usual_values(grid: list[dict[str, Any]], rec: record_lib.Record) -> dict[str, str]:
    """Each config key's most common value over the grid's runs that the record leaves
    it out for (it was at its default when the grid ran, for all of them alike): what a
    run should have there. Not today's default, which may have changed since."""
    counts: dict[str, Counter[str]] = {}
    for row in grid:
        recorded = rec.configs[row["run_id"]]
        for key, value in row.items():
            if (key == "seed" or "." in key) and key not in recorded:
                counts.setdefault(key, Counter())[same_text(value)] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists (index_dims, max_resolution) as hashable text; the base metric columns."""
    for col in frame.columns:
        if frame[col].map(lambda v: isinstance(v, list | tuple)).any():
            frame[col] = frame[col].map(
                lambda v: (v[0] if len(v) == 1 else "x".join(map(str, v)))
                if isinstance(v, list | tuple) else v)
    if "status" not in frame:
        frame["status"] = pd.Series(dtype=str)
    return frame


def config_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c == "seed" or c.startswith(("model.", "data.", "train."))]


def check_cells(frame: pd.DataFrame, knobs: list[str], out: Path) -> None:
    """Two configs in one cell would be averaged as seeds of one: refuse, in one line."""
    present = frame[~frame["status"].isin(ABSENT)]
    if present.empty or not knobs:
        return
    keys = [c for c in config_columns(present) if c != "seed" and c not in knobs
            and c not in cfg_lib.DERIVED_KEYS]
    for cell, runs in present.groupby(knobs, dropna=False, sort=False):
        for key in keys:
            values = list(dict.fromkeys(runs[key].map(text)))
            if len(values) > 1:
                where = ", ".join(f"{k}={v}" for k, v in zip(
                    knobs, cell if isinstance(cell, tuple) else (cell,), strict=True))
                raise SuiteError(f"{out}: the cell {where} holds runs of two configs ({key}: "
                                 f"{' vs '.join(values[:2])}); they are not seeds of one")


def _spec_configs(rec: record_lib.Record, frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Each run's full flat config, for the 'differs' text: as recorded (defaults filled
    in), else as its run folder has it."""
    defaults = cfg_lib.flatten(cfg_lib.Config())
    present = {r["run_id"]: r for r in frame[~frame["status"].isin(ABSENT)].to_dict("records")}
    out = []
    for run_id, config in rec.configs.items():
        if config:
            out.append({**defaults, **config})
        elif run_id in present:
            out.append({k: v for k, v in present[run_id].items() if "." in k or k == "seed"})
    return out


def _others(spec_configs: list[dict[str, Any]], others: pd.DataFrame,
            changed: dict[str, str] | None = None) -> pd.DataFrame:
    """Run folders outside the experiment, each with how it differs from its nearest run
    (a grid's run changed since: how it changed)."""
    changed = changed or {}
    columns = ["run_id", "status", "differs"]
    if others.empty:
        return pd.DataFrame(columns=columns)
    keys = [c for c in config_columns(others) if c not in cfg_lib.DERIVED_KEYS]
    out = []
    for row in others.to_dict("records"):
        out.append({"run_id": row["run_id"], "status": row.get("status", ""),
                    "differs": changed.get(row["run_id"]) or differs(row, keys, spec_configs)})
    return pd.DataFrame(out, columns=columns)


def differs(row: dict[str, Any], keys: list[str], spec_configs: list[dict[str, Any]]) -> str:
    """``"train.steps=50 (spec: 200)"``: how a run differs from the spec's nearest run."""
    if not spec_configs:
        return "no spec recorded"
    best: list[tuple[str, Any, Any]] | None = None
    for config in spec_configs:
        diff = [(k, row.get(k), config.get(k)) for k in keys
                if text(row.get(k)) != text(config.get(k))]
        if best is None or len(diff) < len(best):
            best = diff
    if not best:
        return "the same config as one of the spec's runs"
    return ", ".join(f"{k}={text(a)} (spec: {text(b)})" for k, a, b in best[:4]) + (
        f", and {len(best) - 4} more" if len(best) > 4 else "")


def text(value: Any) -> str:
    """A value as text, lists as the folders' '8x8', numbers without a trailing '.0'."""
    if isinstance(value, list | tuple):
        value = value[0] if len(value) == 1 else "x".join(map(text, value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is None or (isinstance(value, float) and value != value):
        return "none"
    return json.dumps(value) if isinstance(value, bool) else str(value)
