"""seaborn figures for a results folder: metric vs knobs, learning curves, metric vs FLOPs."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from suite.analysis.tables import ReportSpec  # noqa: E402


def is_geometric(values: pd.Series) -> bool:
    """Positive numbers spanning a factor of 8 or more: plot on a log axis."""
    v = pd.to_numeric(values, errors="coerce").dropna().unique()
    return len(v) >= 3 and (v > 0).all() and v.max() / v.min() >= 8 and \
        bool(np.all(np.diff(np.sort(v)) > 0))


def _held_fixed(spec: ReportSpec) -> str:
    """'digits preset; model.num_blocks=4, train.steps=300': what every run shared."""
    if not spec.spec_text:
        return ""
    raw = tomllib.loads(spec.spec_text)
    fixed = raw.get("fixed", {})
    items = [f"{k}={v}" for k, v in fixed.items() if not isinstance(v, dict)]
    for section, values in fixed.items():
        if isinstance(values, dict):
            items += [f"{section}.{k}={v}" for k, v in values.items()]
    bookkeeping = ("train.eval_every", "train.checkpoint_every", "train.log_every",
                   "train.keep_checkpoints")
    items = [i for i in items if not i.startswith(bookkeeping)]
    text = f"{raw.get('preset', '')} preset" + (f"; {', '.join(items)}" if items else "")
    return "\n".join(textwrap.wrap(text, width=90))


def _save(fig: plt.Figure, path: Path) -> list[Path]:
    fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    # No dates and fixed ids: a regenerated report changes only where its figures do.
    with plt.rc_context({"svg.hashsalt": "perceiver-suite"}):
        fig.savefig(out[0], dpi=120, metadata={"Software": None})
        fig.savefig(out[1], metadata={"Date": None})
    plt.close(fig)
    return out


def _label(spec: ReportSpec, frame: pd.DataFrame) -> pd.Series:
    knobs = spec.knobs or ["model.kind"]
    return frame[knobs].astype(str).apply(
        lambda r: ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.items()), axis=1)


def metric_vs_knob(frame: pd.DataFrame, spec: ReportSpec, x: str, hue: str | None,
                   out_dir: Path) -> list[Path]:
    done = frame[frame["status"] == "completed"].dropna(subset=[spec.metric]).copy() \
        if spec.metric in frame else frame.iloc[0:0]
    if done.empty or x not in done:
        return []  # nothing completed: the tables list the failures
    if hue and (hue not in done or done[hue].nunique() < 2):
        hue = None  # one level left among completed runs (the others failed): no legend
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = pd.api.types.is_numeric_dtype(done[x]) and not pd.api.types.is_bool_dtype(done[x])
    hue_order = None
    if hue:
        done[hue] = done[hue].map(level_label)
        hue_order = in_spec_order(done[hue], spec.levels.get(hue))
    if numeric:
        sns.lineplot(data=done, x=x, y=spec.metric, hue=hue, hue_order=hue_order, marker="o",
                     errorbar="sd", err_style="bars", ax=ax)
        if is_geometric(done[x]):
            ax.set_xscale("log", base=2)
        values = sorted(done[x].dropna().unique())
        if len(values) <= 10:  # tick exactly the values that were run
            ax.set_xticks(values)
            ax.set_xticklabels([level_label(v) for v in values])
            ax.minorticks_off()
    else:
        done[x] = done[x].map(level_label)
        sns.pointplot(data=done, x=x, y=spec.metric, hue=hue, errorbar="sd",
                      order=in_spec_order(done[x], spec.levels.get(x)), hue_order=hue_order,
                      dodge=0.2 if hue else False, capsize=0.1, ax=ax)
    ax.set_title(f"{spec.metric} vs {x} (mean ± std over seeds)\n{_held_fixed(spec)}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, out_dir / f"{spec.metric.replace('/', '_')}_vs_{x.split('.')[-1]}")


def level_label(value: Any) -> str:
    """A knob value as a legend or axis label: numbers without a trailing '.0'."""
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


def in_spec_order(values: pd.Series, levels: list[Any] | None) -> list[str]:
    """The labels present, in the order the spec lists them (raw before permuted, 7 before
    28 before 112); values the spec does not list follow, numbers in numeric order."""
    present = list(dict.fromkeys(level_label(v) for v in values))
    known = [label for label in map(level_label, levels or []) if label in present]

    def key(label: str) -> tuple[int, float, str]:
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    return known + sorted((v for v in present if v not in known), key=key)


def learning_curves(frame: pd.DataFrame, curves: pd.DataFrame, spec: ReportSpec,
                    out_dir: Path) -> list[Path]:
    if curves.empty:
        return []
    labels = dict(zip(frame["run_id"], _label(spec, frame), strict=True))
    data = curves.assign(config=curves["run_id"].map(labels))
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    sns.lineplot(data=data, x="step", y="accuracy", hue="config", style="split",
                 style_order=["train", "eval"], errorbar="sd", ax=ax)
    ax.set_title("train (solid) and eval (dashed) accuracy over steps; a gap is overfitting\n"
                 + _held_fixed(spec), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir / "curves")


def metric_vs_flops(frame: pd.DataFrame, spec: ReportSpec, out_dir: Path) -> list[Path]:
    done = frame[frame["status"] == "completed"].copy()
    if "flops_forward_analytic" not in done or spec.metric not in done:
        return []
    done = done.dropna(subset=["flops_forward_analytic", spec.metric])
    if done.empty:
        return []
    done["config"] = _label(spec, done)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.scatterplot(data=done, x="flops_forward_analytic", y=spec.metric, hue="config", ax=ax)
    if done["flops_forward_analytic"].nunique() > 1:
        ax.set_xscale("log")
    ax.set_xlabel("forward FLOPs per example (analytic)")
    ax.set_title(f"{spec.metric} against compute\n{_held_fixed(spec)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir / f"{spec.metric.replace('/', '_')}_vs_flops")


def all_figures(frame: pd.DataFrame, curves: pd.DataFrame, spec: ReportSpec,
                out_dir: Path) -> list[Path]:
    """Every figure of a report; PNG and SVG each."""
    sns.set_theme(style="whitegrid", context="notebook")
    paths: list[Path] = []
    knobs = spec.knobs or []
    order = [spec.x] + [k for k in knobs if k != spec.x] if spec.x else knobs
    for x in order:
        hue = spec.hue if x == spec.x else (spec.x if spec.x != x else None)
        paths += metric_vs_knob(frame, spec, x, hue if hue != x else None, out_dir)
    paths += learning_curves(frame, curves, spec, out_dir)
    paths += metric_vs_flops(frame, spec, out_dir)
    return paths
