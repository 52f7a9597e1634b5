"""Run folders -> one tidy DataFrame -> seed aggregates -> paper-style tables.

Reads the run folders themselves (never only ``results.csv``), so a table can always be
rebuilt. Seeds are aggregated as mean ± std (and n); failed or missing runs are shown,
never dropped.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from suite.errors import SuiteError
from suite.sweeps.results import read_runs

BASE_METRICS = ("eval/accuracy", "eval/loss", "train/accuracy", "train/loss")
HIGHER_IS_BETTER = {"eval/accuracy": True, "train/accuracy": True, "gap": False,
                    "eval/mAP": True,
                    "eval/loss": False, "train/loss": False}
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


def load_frame(out: Path) -> pd.DataFrame:
    """One row per run folder under ``out/runs``: config, seed, metrics, cost, status."""
    rows = read_runs(out)
    if not rows:
        raise SuiteError(f"{out}: no run folders under {Path(out) / 'runs'} (run a spec first: "
                         f"perceiver-suite run SPEC --out {out})")
    frame = pd.DataFrame(rows)
    for col in frame.columns:  # lists (index_dims, max_resolution) -> hashable text
        if frame[col].map(lambda v: isinstance(v, list)).any():
            frame[col] = frame[col].map(
                lambda v: (v[0] if len(v) == 1 else "x".join(map(str, v)))
                if isinstance(v, list) else v)
    for m in BASE_METRICS:  # a grid where nothing completed still has the columns
        if m not in frame:
            frame[m] = float("nan")
    if "eval/accuracy" in frame and "train/accuracy" in frame:
        frame["gap"] = frame["train/accuracy"] - frame["eval/accuracy"]
    return frame


def report_spec(out: Path, frame: pd.DataFrame, *, metric: str | None = None,
                rows: list[str] | None = None, cols: list[str] | None = None) -> ReportSpec:
    """Rows, columns and metric: command-line choices, else the spec's [report], else inferred."""
    hints: dict[str, Any] = {}
    spec_text, name, description, knobs = "", Path(out).name, "", []
    levels: dict[str, list[Any]] = {}
    spec_path = Path(out) / "spec.toml"
    if spec_path.exists():
        spec_text = spec_path.read_text()
        raw = tomllib.loads(spec_text)
        hints = raw.get("report", {})
        name, description = raw.get("name", name), raw.get("description", "")
        for section in ("grid", "zip"):
            knobs += _dotted(raw.get(section, {}))
            levels.update(_values(raw.get(section, {})))
    if not knobs:  # infer: config columns that take more than one value
        knobs = [c for c in frame.columns if "." in c and c not in NON_KNOBS
                 and not c.startswith(("eval/", "train/")) and frame[c].nunique(dropna=False) > 1]
    knobs = [k for k in knobs if k in frame.columns]
    multi_label = "eval/mAP" in frame and frame["eval/mAP"].notna().any()
    metric = metric or hints.get("metric", "eval/mAP" if multi_label else "eval/accuracy")
    if metric not in frame.columns:
        known = [c for c in frame.columns if c.startswith(("eval/", "train/"))]
        raise SuiteError(f"--metric={metric!r} is not in the results; known: {', '.join(known)}")
    rows = rows or hints.get("rows") or knobs
    cols = cols or hints.get("cols") or []
    for key in [*rows, *cols]:
        if key not in frame.columns:
            raise SuiteError(f"report key {key!r} is not a config column of {out}")
    x = hints.get("x") or (knobs[0] if knobs else None)
    hue = hints.get("hue") or next((k for k in knobs if k != x), None)
    return ReportSpec(knobs, metric, list(rows), list(cols), x, hue, name, description, spec_text,
                      levels)


def _values(table: dict, prefix: str = "") -> dict[str, list[Any]]:
    """``{dotted key: its distinct values in the order the spec lists them}``."""
    out: dict[str, list[Any]] = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_values(v, f"{prefix}{k}."))
        elif isinstance(v, list):
            out[f"{prefix}{k}"] = list(dict.fromkeys(map(str, v)))
    return out


def _dotted(table: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in table.items():
        out += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def aggregate(frame: pd.DataFrame, knobs: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per configuration: mean, std and n of each metric over completed seeds."""
    keys = knobs or ["model.kind"]
    done = frame[frame["status"] == "completed"]
    groups = frame.groupby(keys, dropna=False, sort=True)
    out = groups.size().rename("runs").to_frame()
    out["completed"] = done.groupby(keys, dropna=False).size().reindex(out.index).fillna(0)
    out["failed"] = frame[frame["status"] == "failed"].groupby(keys, dropna=False).size() \
        .reindex(out.index).fillna(0)
    for m in metrics:
        if m not in frame:
            continue
        g = done.groupby(keys, dropna=False)[m]
        out[f"{m} mean"] = g.mean().reindex(out.index)
        out[f"{m} std"] = g.std(ddof=1).reindex(out.index).fillna(0.0)
    for extra in ("params", "flops_forward_analytic", "wall_seconds"):
        if extra in frame:
            out[extra] = frame.groupby(keys, dropna=False)[extra].max().reindex(out.index)
    for c in ("runs", "completed", "failed"):
        out[c] = out[c].astype(int)
    return out.reset_index()


def _fmt_pm(mean: float, std: float, n: int, percent: bool) -> str:
    if n == 0 or pd.isna(mean):
        return "—"
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else 3
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if n > 1 else "")


def _fmt_count(x: float) -> str:
    if pd.isna(x):
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def paper_table(agg: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, dict[str, int]]:
    """The display table (strings) and, per metric column, the row index of the best value."""
    extra = ("eval/accuracy", "train/accuracy", "gap") if "mAP" in spec.metric else \
        ("train/accuracy", "gap")  # multi-label: top-1 beside the mAP
    metrics = [spec.metric] + [m for m in extra if m != spec.metric]
    shown = pd.DataFrame({k: agg[k] for k in (spec.knobs or [])})
    best: dict[str, int] = {}
    for m in metrics:
        if f"{m} mean" not in agg:
            continue
        percent = m.endswith(("accuracy", "mAP")) or m == "gap"
        label = f"{m} (%)" if percent else m
        shown[label] = [_fmt_pm(a, s, n, percent) for a, s, n in
                        zip(agg[f"{m} mean"], agg[f"{m} std"], agg["completed"], strict=True)]
        valid = agg[f"{m} mean"].dropna()
        if len(valid) > 1 and m != "gap":  # a gap is reported, not ranked
            hib = HIGHER_IS_BETTER.get(m, True)
            best[label] = int(valid.idxmax() if hib else valid.idxmin())
    shown["n"] = [f"{c}/{r}" for c, r in zip(agg["completed"], agg["runs"], strict=True)]
    shown["failed"] = agg["failed"]
    if "params" in agg:
        shown["params"] = agg["params"].map(_fmt_count)
    if "flops_forward_analytic" in agg:
        shown["FLOPs/example"] = agg["flops_forward_analytic"].map(_fmt_count)
    if "wall_seconds" in agg:
        shown["wall (s)"] = agg["wall_seconds"].map(lambda v: "—" if pd.isna(v) else f"{v:.0f}")
    return shown, best


def pivot_table(agg: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame | None:
    """The paper's layout when the spec names columns: rows x cols of the metric."""
    if not spec.cols or f"{spec.metric} mean" not in agg:
        return None
    percent = spec.metric.endswith(("accuracy", "mAP"))
    cells = agg.assign(cell=[_fmt_pm(a, s, n, percent) for a, s, n in zip(
        agg[f"{spec.metric} mean"], agg[f"{spec.metric} std"], agg["completed"], strict=True)])
    rows = [r for r in spec.rows if r not in spec.cols] or [k for k in spec.knobs
                                                            if k not in spec.cols]
    if not rows:
        return None
    extra = [k for k in spec.knobs if k not in rows and k not in spec.cols]
    if extra:  # more knobs than rows/cols: keep them as rows too
        rows = rows + extra
    pivot = cells.pivot_table(index=rows, columns=spec.cols, values="cell", aggfunc="first")
    names = [c.rsplit(".", 1)[-1] for c in spec.cols]
    pivot.columns = [
        ", ".join(f"{n}={v:g}" if isinstance(v, float) else f"{n}={v}"
                  for n, v in zip(names, col if isinstance(col, tuple) else (col,), strict=True))
        for col in pivot.columns
    ]
    return pivot.reset_index().fillna("—")


def to_markdown(shown: pd.DataFrame, best: dict[str, int]) -> str:
    marked = shown.copy().astype(object)
    for col, i in best.items():
        marked.loc[i, col] = f"**{marked.loc[i, col]}**"
    return marked.to_markdown(index=False)


_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                   "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "\\": r"\textbackslash{}"}


def _tex(text: Any) -> str:
    s = "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))
    return s.replace("±", r"$\pm$").replace("—", "--")


def to_latex(shown: pd.DataFrame, best: dict[str, int], caption: str) -> str:
    """A booktabs table; the best value per metric in bold. No jinja2 needed."""
    cols = list(shown.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    for i, row in shown.reset_index(drop=True).iterrows():
        cells = []
        for c in cols:
            cell = _tex(row[c])
            cells.append(rf"\textbf{{{cell}}}" if best.get(c) == i else cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_tex(caption)}}}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"

