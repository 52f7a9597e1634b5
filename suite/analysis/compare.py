"""Two results folders of one spec (another code version, machine or precision) ->
per-cell deltas of a metric with p-values, and whether any cell moved beyond seed noise.

Cells are matched by their varied knobs; each pair is tested over the seeds both
folders ran (paired t), Welch's t-test otherwise. Exit status for the command line: 0
when no cell moved beyond noise, 1 when some did, 2 when the folders share no cell.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from suite.analysis import experiment as experiment_lib
from suite.analysis import stats
from suite.analysis.tables import fmt_pm, is_percent, report_spec, seeds_of, with_gap
from suite.errors import SuiteError

EXIT_SAME, EXIT_MOVED, EXIT_NOTHING_SHARED = 0, 1, 2


@dataclasses.dataclass
class Comparison:
    table: pd.DataFrame  # one row per shared cell
    only_old: list[str]
    only_new: list[str]
    differences: list[str]  # how the two folders' code and machines differ
    metric: str

    @property
    def moved(self) -> int:
        return int((self.table["verdict"] == "moved").sum())

    @property
    def exit_code(self) -> int:
        return EXIT_MOVED if self.moved else EXIT_SAME


def cells(out: Path, metric: str | None) -> tuple[dict[str, dict[int, float]], str, pd.DataFrame]:
    """``{cell key: {seed: metric}}`` of a folder's experiment, its metric, and its frame."""
    exp = experiment_lib.load(out)
    frame = with_gap(exp.frame)
    spec = report_spec(out, exp, metric=metric)
    keys = spec.knobs or ["model.kind"]
    frame = frame.assign(**{k: frame[k] if k in frame else "—" for k in keys})
    names = [", ".join(f"{k.rsplit('.', 1)[-1]}={experiment_lib.text(v)}" for k, v in zip(
        keys, cell if isinstance(cell, tuple) else (cell,), strict=True))
        for cell, _ in frame.groupby(keys, dropna=False, sort=False)]
    return dict(zip(names, seeds_of(frame, spec.knobs, spec.metric), strict=True)), \
        spec.metric, frame


def compare(old: Path, new: Path, metric: str | None = None) -> Comparison:
    old_cells, metric, old_frame = cells(old, metric)
    new_cells, _, new_frame = cells(new, metric)
    shared = [c for c in old_cells if c in new_cells]
    if not shared:
        raise SuiteError(f"{old} and {new} share no cell (cells are matched by their varied "
                         f"keys; {old} has e.g. {next(iter(old_cells), 'none')}, {new} "
                         f"{next(iter(new_cells), 'none')})")
    percent = is_percent(metric)
    rows = []
    for cell in shared:
        a, b = new_cells[cell], old_cells[cell]
        c = stats.compare(a, b)
        tied = c.tied
        rows.append({
            "cell": cell,
            "old": _summary(b, percent), "new": _summary(a, percent),
            "delta": c.delta * (100 if percent else 1), "p": c.p, "test": c.test,
            "verdict": "n < 2" if tied is None else ("within noise" if tied else "moved")})
    return Comparison(pd.DataFrame(rows), [c for c in old_cells if c not in new_cells],
                      [c for c in new_cells if c not in old_cells],
                      differences(old_frame, new_frame), metric)


def _summary(seeds: dict[int, float], percent: bool) -> str:
    values = pd.Series(list(seeds.values()), dtype=float)
    if values.empty:
        return "—"
    return fmt_pm(values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0, len(values),
                  percent) + f" (n {len(values)})"


def differences(old: pd.DataFrame, new: pd.DataFrame) -> list[str]:
    """What the two folders' runs were made with, where that differs."""
    out = []
    for column, what in (("code", "code"), ("machine", "machine"), ("peak_precision",
                                                                      "precision")):
        a = sorted({str(v) for v in old.get(column, pd.Series(dtype=str)).dropna()})
        b = sorted({str(v) for v in new.get(column, pd.Series(dtype=str)).dropna()})
        if a != b:
            out.append(f"{what}: {'; '.join(a) or 'unrecorded'} -> {'; '.join(b) or 'unrecorded'}")
    return out


def render(result: Comparison, old: Path, new: Path) -> str:
    table = result.table.assign(
        delta=[f"{d:+.2f}" if math.isfinite(d) else "—" for d in result.table["delta"]],
        p=["—" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")
           for p in result.table["p"]])
    unit = " (points)" if is_percent(result.metric) else ""
    lines = [f"{result.metric}: {old} (old) -> {new} (new); delta = new - old{unit}, "
             f"p: paired t over shared seeds, Welch's otherwise; moved: p < {stats.ALPHA:g}",
             "", table.to_markdown(index=False, disable_numparse=True), ""]
    if result.only_old or result.only_new:
        lines += [f"only in {old}: {', '.join(result.only_old) or 'none'}",
                  f"only in {new}: {', '.join(result.only_new) or 'none'}", ""]
    lines += [f"the folders differ in {d}" for d in result.differences] or [
        "the folders' runs were made with the same recorded code, machine and precision"]
    n = len(result.table)
    lines.append(f"{result.moved} of {n} shared cells moved beyond seed noise" if result.moved
                 else f"no cell of {n} moved beyond seed noise")
    return "\n".join(lines)
