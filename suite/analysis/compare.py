"""Two results folders of one experiment (another code version, machine or precision) ->
per-cell deltas of a metric with p-values, and whether any cell moved beyond seed noise.

The folders must have run the same config: every key outside the varied ones is compared
run by run (each run's config.json, or results.csv where the run folders are gone) and a
difference refuses the comparison unless it is allowed; differences of code, libraries,
plugins, machine and precision are what a comparison is for, and are named. Cells are
matched by their varied keys; each pair is tested with an exact permutation test over
seeds (``suite.analysis.stats``), and the verdict is decided by Holm's correction over
the cells compared: one call is one family. Exit status for the command line: 0 when no
cell moved, 1 when some did, 2 when the configs differ or the folders share no cell.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from suite import config as cfg_lib
from suite.analysis import experiment as experiment_lib
from suite.analysis import inputs, stats
from suite.analysis.origin import folder_facts, mixed_versions, provenance_differences
from suite.analysis.tables import fmt_pm, is_percent, report_spec, seeds_of, with_gap
from suite.errors import SuiteError

EXIT_SAME, EXIT_MOVED, EXIT_NOT_COMPARABLE = 0, 1, 2
EXIT_NOTHING_SHARED = EXIT_NOT_COMPARABLE


@dataclasses.dataclass
class Comparison:
    table: pd.DataFrame  # one row per shared cell
    only_old: list[str]
    only_new: list[str]
    differences: list[str]  # how the two folders' code, libraries and machines differ
    metric: str
    config: list[str] = dataclasses.field(default_factory=list)  # allowed config differences
    limit: str = ""  # why no cell can be decided with these seeds, if none can
    mixed: list[str] = dataclasses.field(default_factory=list)  # plugin versions within one

    @property
    def moved(self) -> int:
        return int((self.table["verdict"] == "moved").sum())

    @property
    def tested(self) -> int:
        """The family Holm's correction is over: the shared cells that could be tested."""
        return int(self.table["test"].isin(stats.TESTS).sum())

    @property
    def exit_code(self) -> int:
        return EXIT_MOVED if self.moved else EXIT_SAME


def cells(out: Path, metric: str | None) -> tuple[dict[str, dict[int, float]], str,
                                                  experiment_lib.Experiment, list[str]]:
    """``{cell key: {seed: metric}}`` of a folder's experiment, its metric, the experiment
    (its frame with the gap) and its varied keys."""
    exp = experiment_lib.load(out)
    frame = inputs.metric_checked(out, with_gap(exp.frame), metric)
    spec = report_spec(out, exp, metric=metric)
    keys = spec.knobs or ["model.kind"]
    frame = frame.assign(**{k: frame[k] if k in frame else "—" for k in keys})
    names = [", ".join(f"{k.rsplit('.', 1)[-1]}={experiment_lib.text(v)}" for k, v in zip(
        keys, cell if isinstance(cell, tuple) else (cell,), strict=True))
        for cell, _ in frame.groupby(keys, dropna=False, sort=False)]
    return dict(zip(names, seeds_of(frame, spec.knobs, spec.metric), strict=True)), \
        spec.metric, dataclasses.replace(exp, frame=frame), spec.knobs


def decide(new: list[dict[int, float]], old: list[dict[int, float]]
           ) -> tuple[list[stats.Comparison], np.ndarray, list[str]]:
    """Each cell's new ``{seed: metric}`` against its old: the tests, their p Holm-adjusted
    over the cells tested, and each verdict (moved, within noise, n < 2)."""
    comparisons = [stats.compare(a, b) for a, b in zip(new, old, strict=True)]
    adjusted, differs = stats.decide(comparisons)
    verdicts = ["n < 2" if d is None else "moved" if d else "within noise" for d in differs]
    return comparisons, adjusted, verdicts


def compare(old: Path, new: Path, metric: str | None = None, *,
            allow_config_diff: bool = False) -> Comparison:
    old_cells, metric, old_exp, old_knobs = cells(old, metric)
    new_cells, _, new_exp, new_knobs = cells(new, metric)
    config = config_differences(old_exp.frame, new_exp.frame, old_knobs, new_knobs)
    if config and not allow_config_diff:
        raise SuiteError(f"{old} and {new} ran different configs ({'; '.join(config)}): "
                         "their cells are not the same experiment (--allow-config-diff "
                         "compares them anyway)")
    shared = [c for c in old_cells if c in new_cells]
    if not shared:
        raise SuiteError(f"{old} and {new} share no cell (cells are matched by their varied "
                         f"keys; {old} has e.g. {next(iter(old_cells), 'none')}, {new} "
                         f"{next(iter(new_cells), 'none')})")
    percent = is_percent(metric)
    comparisons, adjusted, verdicts = decide([new_cells[c] for c in shared],
                                             [old_cells[c] for c in shared])
    rows = [{"cell": cell, "old": _summary(old_cells[cell], percent),
             "new": _summary(new_cells[cell], percent),
             "delta": c.delta * (100 if percent else 1), "p": c.p, "p_holm": q,
             "test": c.test, "verdict": v}
            for cell, c, q, v in zip(shared, comparisons, adjusted, verdicts, strict=True)]
    differences = [f"{k}: {a} -> {b}" for k, a, b in record_differences(old_exp, new_exp)]
    old_facts, new_facts = folder_facts(old, old_exp.frame), folder_facts(new, new_exp.frame)
    differences += provenance_differences(old_facts, new_facts)
    mixed = mixed_versions(old, old_facts) + mixed_versions(new, new_facts)
    return Comparison(pd.DataFrame(rows), [c for c in old_cells if c not in new_cells],
                      [c for c in new_cells if c not in old_cells], differences, metric,
                      config, stats.undecidable(comparisons), mixed)


def _summary(seeds: dict[int, float], percent: bool) -> str:
    values = pd.Series(list(seeds.values()), dtype=float)
    if values.empty:
        return "—"
    return fmt_pm(values.mean(), values.std(ddof=1), len(values), percent) + \
        f" (n {len(values)})"


def config_differences(old: pd.DataFrame, new: pd.DataFrame, old_knobs: list[str],
                       new_knobs: list[str]) -> list[str]:
    """``"train.steps: 300 vs 20"`` for every config key, outside the keys both folders
    vary, whose values over the runs differ. A key one folder's code did not record (a
    key added since) is a code difference, named by the code's version, not here."""
    old, new = _present(old), _present(new)
    varied = set(old_knobs) & set(new_knobs)
    keys = [k for k in dict.fromkeys(experiment_lib.config_columns(old)
                                     + experiment_lib.config_columns(new))
            if k != "seed" and k not in varied and k not in cfg_lib.DERIVED_KEYS
            and k in old and k in new]
    out = []
    for key in keys:
        a, b = _values(old[key]), _values(new[key])
        if a != b:
            out.append(f"{key}: {', '.join(a)} vs {', '.join(b)}")
    return out


def _present(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["status"].isin(experiment_lib.ABSENT)] if "status" in frame else frame


def _values(column: pd.Series) -> list[str]:
    """A key's distinct values as text, numbers in numeric order."""
    def order(value: str) -> tuple[int, float, str]:
        try:
            return (0, float(value), value)
        except ValueError:
            return (1, 0.0, value)

    return sorted(set(column.map(experiment_lib.text)), key=order)


def record_differences(old: experiment_lib.Experiment,
                       new: experiment_lib.Experiment) -> list[tuple[str, str, str]]:
    """The recorded spec name and command-line overrides, where they differ."""
    def facts(exp: experiment_lib.Experiment) -> dict[str, str]:
        if exp.record is None:
            return {}
        return {"spec": exp.record.name, "overrides": " ".join(
            f"{k}={v}" for k, v in exp.record.overrides.items()) or "none"}

    a, b = facts(old), facts(new)
    return [(k, a.get(k, "unrecorded"), b.get(k, "unrecorded")) for k in dict.fromkeys([*a, *b])
            if a.get(k) != b.get(k)]


def render(result: Comparison, old: Path, new: Path) -> str:
    k = result.tested
    table = result.table.assign(
        delta=[f"{d:+.2f}" if math.isfinite(d) else "—" for d in result.table["delta"]],
        p=[_fmt_p(p) for p in result.table["p"]],
        p_holm=[_fmt_p(p) for p in result.table["p_holm"]]).rename(
        columns={"p_holm": f"p (Holm, k={k})"})
    unit = " (points)" if is_percent(result.metric) else ""
    lines = []
    if result.config:
        lines += ["the folders ran different configs (compared anyway, --allow-config-diff):",
                  *[f"  {d}" for d in result.config], ""]
    lines += [f"{result.metric}: {old} (old) -> {new} (new); delta = new - old{unit}",
              "p: two-sided exact permutation test of each cell (sign flips of the per-seed "
              "differences over the seeds both ran, else relabelling of the runs); "
              f"p (Holm): p Holm-adjusted over the {k} cells tested, which decides: moved "
              f"when p (Holm) < {stats.ALPHA:g}",
              "", table.to_markdown(index=False, disable_numparse=True), ""]
    if result.only_old or result.only_new:
        lines += [f"only in {old}: {', '.join(result.only_old) or 'none'}",
                  f"only in {new}: {', '.join(result.only_new) or 'none'}", ""]
    lines += [f"the folders differ in {d}" for d in result.differences] or [
        "the folders' runs were made with the same recorded config, code, libraries, "
        "machine and precision"]
    lines += result.mixed
    if result.limit:
        lines.append(result.limit)
    n = len(result.table)
    lines.append(f"{result.moved} of {n} shared cells moved beyond seed noise (Holm over {k})"
                 if result.moved else f"no cell of {n} moved beyond seed noise (Holm over {k})")
    return "\n".join(lines)


def _fmt_p(p: float) -> str:
    return "—" if not math.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")
