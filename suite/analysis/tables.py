"""An experiment's runs -> one row per config cell -> paper-style tables that say what
their numbers are: mean ± std over the cell's seeds, the 95% t interval, and whether
the cell is distinguishable from the best one (or a named reference) beyond seed noise.

Cells are in the spec's order (the order its grid and zip list their values); failed or
missing runs are counted and listed, never dropped.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from suite.analysis import stats
from suite.analysis.experiment import Experiment
from suite.config.overrides import did_you_mean
from suite.errors import SuiteError

BASE_METRICS = ("eval/accuracy", "eval/loss", "train_eval/accuracy", "train_eval/loss",
                "train/accuracy", "train/loss")
HIGHER_IS_BETTER = {"eval/accuracy": True, "train/accuracy": True, "gap": False,
                    "eval/mAP": True, "train_eval/accuracy": True, "train_eval/mAP": True,
                    "eval/loss": False, "train/loss": False, "train_eval/loss": False}
LABELS = {"train_eval/accuracy": "train, evaluated (%)", "gap": "gap (%)"}
NON_KNOBS = {"run_id", "status", "varied", "reason", "step", "seed", "device", "machine",
             "model.cross_attend_every"}


@dataclass
class ReportSpec:
    """What to put in rows, columns and on the y axis (from the spec, or inferred)."""

    knobs: list[str]  # the varied config keys, seeds excluded
    metric: str = "eval/accuracy"
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    x: str | None = None
    hue: str | None = None
    name: str = ""
    description: str = ""
    spec_text: str = ""
    levels: dict[str, list[Any]] = field(default_factory=dict)  # each knob's values, spec order
    zip_keys: list[str] = field(default_factory=list)  # knobs varied together
    reference: dict[str, str] | None = None  # compare with this cell instead of the best

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.metric, not self.metric.endswith("loss"))

    @property
    def versus(self) -> str:
        return "reference" if self.reference else "best"


def with_gap(frame: pd.DataFrame) -> pd.DataFrame:
    """The base metric columns, and the train-eval gap: the fixed training subset's
    accuracy (evaluated as the eval split is) minus the eval accuracy."""
    for m in BASE_METRICS:
        if m not in frame:
            frame[m] = float("nan")
    frame["gap"] = frame["train_eval/accuracy"] - frame["eval/accuracy"]
    return frame


def report_spec(out: Path, exp: Experiment, *, metric: str | None = None,
                rows: list[str] | None = None, cols: list[str] | None = None,
                reference: dict[str, str] | None = None) -> ReportSpec:
    """Rows, columns and metric: command-line choices, else the spec's [report], else inferred."""
    frame = exp.frame
    hints: dict[str, Any] = {}
    spec_text, name, description, zip_keys = "", Path(out).name, "", []
    levels: dict[str, list[Any]] = {}
    spec_path = Path(out) / "spec.toml"
    if spec_path.exists():
        spec_text = spec_path.read_text()
        raw = tomllib.loads(spec_text)
        hints = raw.get("report", {})
        name, description = raw.get("name", name), raw.get("description", "")
        for section in ("grid", "zip"):
            levels.update(_values(raw.get(section, {})))
        zip_keys = list(_values(raw.get("zip", {})))
    knobs = list(exp.knobs)
    if not knobs and exp.record is None:  # no spec: config columns that take several values
        knobs = [c for c in frame.columns if "." in c and c not in NON_KNOBS
                 and not c.startswith(("eval/", "train/", "train_eval/"))
                 and frame[c].nunique(dropna=False) > 1]
    knobs = [k for k in knobs if k in frame.columns]
    multi_label = "eval/mAP" in frame and frame["eval/mAP"].notna().any()
    metric = metric or hints.get("metric", "eval/mAP" if multi_label else "eval/accuracy")
    if metric not in frame.columns and metric != "gap":
        known = [c for c in frame.columns if c.startswith(("eval/", "train/", "train_eval/"))]
        raise SuiteError(f"--metric={metric!r} is not in the results; known: {', '.join(known)}")
    if reference is None and hints.get("reference"):  # the spec's, as --reference writes it
        reference = {k: _text(v) for k, v in hints["reference"].items()}
    rows = rows or hints.get("rows") or knobs
    cols = cols or hints.get("cols") or []
    for key in [*rows, *cols, *(reference or {})]:
        if key not in knobs:
            raise SuiteError(f"report key {key!r} is not a varied key of {out}"
                             f"{did_you_mean(key, knobs)} (varied: {', '.join(knobs) or 'none'})")
    x = hints.get("x") or (knobs[0] if knobs else None)
    hue = hints.get("hue") or next((k for k in knobs if k != x), None)
    title = exp.title or name
    if hints.get("title"):  # the spec's heading, with the overrides its run took
        record_name = exp.record.name if exp.record else ""
        title = hints["title"] + (title[len(record_name):] if record_name and
                                  title.startswith(record_name) else "")
    return ReportSpec(knobs, metric, list(rows), list(cols), x, hue, title,
                      description, spec_text, levels, zip_keys, reference)


def _values(table: dict, prefix: str = "") -> dict[str, list[Any]]:
    """``{dotted key: its distinct values in the order the spec lists them}``."""
    out: dict[str, list[Any]] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_values(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = list(dict.fromkeys(map(str, v)))
    return out


def cell_keys(knobs: list[str]) -> list[str]:
    return knobs or ["model.kind"]


def aggregate(frame: pd.DataFrame, knobs: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per cell, in the order cells first appear: runs, completed, failed, and
    mean, std and n of each metric over the completed seeds."""
    keys = cell_keys(knobs)
    frame = frame.assign(**{k: frame[k] if k in frame else "—" for k in keys})
    done = frame[frame["status"] == "completed"]
    out = frame.groupby(keys, dropna=False, sort=False).size().rename("runs").to_frame()
    out["completed"] = done.groupby(keys, dropna=False).size().reindex(out.index).fillna(0)
    out["failed"] = frame[frame["status"] == "failed"].groupby(keys, dropna=False).size() \
        .reindex(out.index).fillna(0)
    for m in metrics:
        if m not in frame:
            continue
        g = done.groupby(keys, dropna=False)[m]
        out[f"{m} mean"] = g.mean().reindex(out.index)
        out[f"{m} std"] = g.std(ddof=1).reindex(out.index)  # nan for one seed: unknown
    for extra in ("params", "flops_forward_analytic", "flops_per_example_analytic",
                  "memory_predicted_bytes"):  # the same for every seed of a cell
        if extra in frame:
            out[extra] = frame.groupby(keys, dropna=False)[extra].max().reindex(out.index)
    if "wall_seconds" in frame:  # seconds per run, mean over the cell's completed seeds
        out["wall_seconds"] = done.groupby(keys, dropna=False)["wall_seconds"].mean() \
            .reindex(out.index)
    for c in ("runs", "completed", "failed"):
        out[c] = out[c].astype(int)
    return out.reset_index()


def seeds_of(frame: pd.DataFrame, knobs: list[str], metric: str) -> list[dict[int, float]]:
    """Per cell (in :func:`aggregate`'s order), ``{seed: metric}`` of its completed runs."""
    keys = cell_keys(knobs)
    frame = frame.assign(**{k: frame[k] if k in frame else "—" for k in keys})
    out = []
    for _, runs in frame.groupby(keys, dropna=False, sort=False):
        done = runs[(runs["status"] == "completed") & runs[metric].notna()] \
            if metric in runs else runs.iloc[0:0]
        out.append({int(s): float(v) for s, v in zip(done["seed"], done[metric], strict=True)})
    return out


def holm_header(versus: str, k: int) -> str:
    """The shown column of the p that decides: Holm-adjusted over ``k`` cells."""
    return f"p vs {versus}, Holm (k={k})"


def best_row(agg: pd.DataFrame, spec: ReportSpec) -> int | None:
    col = f"{spec.metric} mean"
    valid = agg[col].dropna() if col in agg else pd.Series(dtype=float)
    if valid.empty:
        return None
    return int(valid.idxmax() if spec.higher_is_better else valid.idxmin())


def reference_rows(agg: pd.DataFrame, spec: ReportSpec) -> list[int | None]:
    """Each cell's reference cell. ``spec.reference`` names one cell (a value for every
    varied key), which every cell is tested against; or it names values of only some
    varied keys, and each cell is tested against the matching cell that agrees with it on
    every other varied key (with ``data.permutation=none``: each permuted cell against its
    own model's raw cell; keys zipped with a named one vary with it and are not matched).
    A cell without such a partner is not tested (None)."""
    named = spec.reference or {}
    mask = pd.Series(True, index=agg.index)
    for key, value in named.items():
        mask &= agg[key].map(lambda v, w=value: _matches(v, w))
    hits = list(agg.index[mask])
    wanted = ",".join(f"{k}={v}" for k, v in named.items())
    if not hits:
        levels = "; ".join(f"{k}: " + ", ".join(dict.fromkeys(map(_text, agg[k])))
                           for k in named)
        raise SuiteError(f"--reference {wanted} matches 0 cells (the values there: {levels})")
    zipped = set(spec.zip_keys) if set(named) & set(spec.zip_keys) else set()
    others = [k for k in spec.knobs if k not in named and k not in zipped and k in agg]
    if not others:
        if len(hits) != 1:
            raise SuiteError(f"--reference {wanted} matches {len(hits)} cells; name one cell "
                             f"by its varied keys ({', '.join(spec.knobs)})")
        return [int(hits[0])] * len(agg)

    def rest(i: Any) -> tuple[str, ...]:
        return tuple(_text(agg.at[i, k]) for k in others)

    partners = {rest(h): int(h) for h in hits}
    if len(partners) != len(hits):
        raise SuiteError(f"--reference {wanted} matches {len(hits)} cells, several with the "
                         f"same {', '.join(others)}; name one value more")
    return [partners.get(rest(i)) for i in agg.index]


def _matches(value: Any, wanted: str) -> bool:
    """A cell's value is the reference's text: as written (``8``, ``none``, ``true``) or
    as a number written another way (``1e-3`` for 0.001, ``8.0`` for 8)."""
    if _text(value).lower() == wanted.strip().lower():
        return True
    try:
        return not isinstance(value, bool) and math.isclose(float(value), float(wanted),
                                                            rel_tol=1e-9)
    except (TypeError, ValueError):
        return False


def per_row_reference(spec: ReportSpec, targets: list[int | None]) -> bool:
    """Whether the cells are tested against their own rows' reference cells."""
    return bool(spec.reference) and len({t for t in targets if t is not None}) > 1


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def fmt_pm(mean: float, std: float, n: int, percent: bool) -> str:
    if n == 0 or pd.isna(mean):
        return "—"
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if n > 1 else "")


def _fmt_count(x: float) -> str:
    if pd.isna(x):
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def is_percent(metric: str) -> bool:
    return metric.endswith(("accuracy", "mAP")) or metric == "gap"


def bounds_of(metric: str) -> tuple[float, float] | None:
    """[0, 1] for a metric that is a share (``eval/accuracy``, ``eval/mAP``); None for
    the others (a loss, a cost, the gap, which may be negative)."""
    return (0.0, 1.0) if metric.endswith(("accuracy", "mAP")) else None


def label_of(metric: str) -> str:
    return LABELS.get(metric, f"{metric} (%)" if is_percent(metric) else metric)


def paper_table(agg: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, list[bool]]:
    """The display table (strings) and, per row, whether it is tied with the best."""
    extra = ("eval/accuracy", "train_eval/accuracy", "gap") if "mAP" in spec.metric else \
        ("train_eval/accuracy", "gap")  # multi-label: top-1 beside the mAP
    metrics = [spec.metric] + [m for m in extra if m != spec.metric]
    shown = pd.DataFrame({k: agg[k] for k in (spec.knobs or [])})
    percent = is_percent(spec.metric)
    scale, digits = (100.0, 1) if percent else (1.0, 3)
    for m in metrics:
        if f"{m} mean" in agg and (m == spec.metric or agg[f"{m} mean"].notna().any()):
            shown[label_of(m)] = [fmt_pm(a, s, n, is_percent(m)) for a, s, n in zip(
                agg[f"{m} mean"], agg[f"{m} std"], agg["completed"], strict=True)]
        if m == spec.metric and "ci95_low" in agg:
            shown["95% CI"] = ["—" if pd.isna(lo) or n < 2 else
                               f"{lo * scale:.{digits}f} to {hi * scale:.{digits}f}"
                               for lo, hi, n in zip(agg["ci95_low"], agg["ci95_high"],
                                                    agg["completed"], strict=True)]
            v = spec.versus
            shown[f"p vs {v}"] = [_fmt_p(p, t, v) for p, t in zip(
                agg[f"p_vs_{v}"], agg[f"test_vs_{v}"], strict=True)]
            k = int(agg[f"test_vs_{v}"].isin(stats.TESTS).sum())
            shown[holm_header(v, k)] = [_fmt_p(p, t, v) for p, t in zip(
                agg[f"p_vs_{v}_holm"], agg[f"test_vs_{v}"], strict=True)]
    shown["n"] = [f"{c}/{r}" for c, r in zip(agg["completed"], agg["runs"], strict=True)]
    if agg["failed"].any():  # n = completed/total says it otherwise
        shown["failed"] = agg["failed"]
    if "params" in agg:
        shown["params"] = agg["params"].map(_fmt_count)
    if "flops_forward_analytic" in agg:
        shown["FLOPs/example"] = agg["flops_forward_analytic"].map(_fmt_count)
    if "wall_seconds" in agg:
        shown["wall (s/run)"] = agg["wall_seconds"].map(lambda v: "—" if pd.isna(v) else f"{v:.0f}")
    tied = list(agg["tied_with_best"] == "true") if "tied_with_best" in agg else \
        [False] * len(agg)
    return shown, tied


def _fmt_p(p: float, test: str, versus: str) -> str:
    if test == stats.SAME:
        return versus
    if test == stats.UNMATCHED:
        return "no ref."
    if test == stats.FEW or pd.isna(p):
        return "n < 2"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def pivot_table(agg: pd.DataFrame,
                spec: ReportSpec) -> tuple[pd.DataFrame, list[list[bool]]] | None:
    """The paper's layout when the spec names columns: rows x cols of the metric, in the
    spec's order, and which cells are tied with the best."""
    if not spec.cols or f"{spec.metric} mean" not in agg:
        return None
    rows = [r for r in spec.rows if r not in spec.cols] or [k for k in spec.knobs
                                                            if k not in spec.cols]
    if not rows:
        return None
    rows = rows + [k for k in spec.knobs if k not in rows and k not in spec.cols]
    text = [fmt_pm(a, s, n, is_percent(spec.metric)) for a, s, n in zip(
        agg[f"{spec.metric} mean"], agg[f"{spec.metric} std"], agg["completed"], strict=True)]
    tied = list(agg["tied_with_best"] == "true") if "tied_with_best" in agg else [False] * len(agg)
    row_keys = list(dict.fromkeys(tuple(r) for r in agg[rows].itertuples(index=False)))
    col_keys = list(dict.fromkeys(tuple(c) for c in agg[spec.cols].itertuples(index=False)))
    cells = {(tuple(r), tuple(c)): (t, b) for r, c, t, b in zip(
        agg[rows].itertuples(index=False), agg[spec.cols].itertuples(index=False), text, tied,
        strict=True)}
    names = [c.rsplit(".", 1)[-1] for c in spec.cols]
    headers = [", ".join(f"{n}={_label(v)}" for n, v in zip(names, ck, strict=True))
               for ck in col_keys]
    table = pd.DataFrame([[*rk, *(cells.get((rk, ck), ("—", False))[0] for ck in col_keys)]
                          for rk in row_keys], columns=[*rows, *headers])
    marks = [[cells.get((rk, ck), ("—", False))[1] for ck in col_keys] for rk in row_keys]
    return table, marks


def _label(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def to_markdown(shown: pd.DataFrame, bold: list[bool], columns: list[str] | None = None) -> str:
    """Markdown; the ``columns`` (default: the metric's) of each row tied with the best bold."""
    marked = shown.copy().astype(object)
    for col in columns or []:
        if col not in marked:
            continue
        for i, b in enumerate(bold):
            if b and marked.iloc[i][col] != "—":
                marked.iloc[i, marked.columns.get_loc(col)] = f"**{marked.iloc[i][col]}**"
    return marked.to_markdown(index=False)


_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                   "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "\\": r"\textbackslash{}"}


def _tex(text: Any) -> str:
    s = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))
    return s.replace("±", r"$\pm$").replace("—", "--").replace("<", r"$<$")


def to_latex(shown: pd.DataFrame, bold: list[bool], columns: list[str], caption: str) -> str:
    """A booktabs table; ``columns`` of every row tied with the best in bold."""
    cols = list(shown.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    for i, row in shown.reset_index(drop=True).iterrows():
        cells = []
        for c in cols:
            cell = _tex(row[c])
            cells.append(rf"\textbf{{{cell}}}" if bold[i] and c in columns and cell != "--"
                         else cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"
