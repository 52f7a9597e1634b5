"""seaborn figures of an experiment: the metric against each knob, learning curves, and
the Pareto front of metric against cost. Every line or point is one config cell:
knobs that vary but are on neither axis become facets, or join the legend when they
vary together with its knob (a ``[zip]``); bars and bands are 95% t intervals of the
mean over seeds, and every figure counts the runs behind each point or line. Only completed
runs are drawn. Each figure's data is written beside it (``<figure>.csv``, one row
per cell and seed), so any figure can be checked and redrawn.
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from suite.analysis.stats import t_interval  # noqa: E402
from suite.analysis.tables import ReportSpec, is_percent, label_of  # noqa: E402
from suite.files import write_text_atomic  # noqa: E402

MAX_CURVE_CELLS = 12  # more lines than that in one figure cannot be read
BARS = "bars: 95% t interval of the mean over seeds"


def is_geometric(values: pd.Series) -> bool:
    """Positive numbers spanning a factor of 8 or more, or stepping by one constant factor
    (learning rates 1e-3, 2e-3, 4e-3): plot on a log axis, where their steps are even."""
    v = np.sort(pd.to_numeric(values, errors="coerce").dropna().unique())
    if len(v) < 3 or not (v > 0).all():
        return False
    ratios = v[1:] / v[:-1]
    steady = ratios.min() >= 1.5 and ratios.max() / ratios.min() <= 1.25
    return bool(v.max() / v.min() >= 8 or steady)


def held_fixed(spec: ReportSpec) -> str:
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
    return "\n".join(textwrap.wrap(text, width=100))


def save(fig: plt.Figure, path: Path, data: pd.DataFrame | None = None,
         layout: bool = True) -> list[Path]:
    """PNG, SVG and (with ``data``) the figure's CSV. No dates and fixed ids: a
    regenerated report changes only where its figures do. ``layout=False``: the figure
    is laid out already (a FacetGrid, whose legend sits beside its axes)."""
    if layout:
        fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    with plt.rc_context({"svg.hashsalt": "perceiver-suite"}):
        fig.savefig(out[0], dpi=120, metadata={"Software": None})
        fig.savefig(out[1], metadata={"Date": None})
    plt.close(fig)
    if data is not None:
        write_text_atomic(path.with_suffix(".csv"), data.to_csv(index=False))
        out.append(path.with_suffix(".csv"))
    return out


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


def plotted(data: pd.DataFrame, metric: str) -> str:
    """The column a figure draws: the metric, in percent where it is a fraction."""
    if not is_percent(metric):
        return metric
    data[label_of(metric)] = 100.0 * data[metric]
    return label_of(metric)


def completed(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in frame:
        return frame.iloc[0:0]
    return frame[(frame["status"] == "completed") & frame[metric].notna()].copy()


def short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def layout(done: pd.DataFrame, spec: ReportSpec, x: str, hue: str | None
           ) -> tuple[str | None, list[str], list[str]]:
    """The legend's knobs and the facets: every knob off the axes that still varies
    within an (x, legend) group joins the legend if it is a zip partner of the legend's
    knob, else becomes a facet. Returns (legend column, legend knobs, facet knobs)."""
    others = [k for k in spec.knobs if k not in (x, hue) and k in done]
    shown = [x] + ([hue] if hue else [])
    legend = [hue] if hue else []
    facets: list[str] = []
    for k in others:
        if done.groupby(shown + legend + facets, dropna=False)[k].nunique(dropna=False).max() <= 1:
            continue  # fixed by what is shown already: not averaged over
        if hue and hue in spec.zip_keys and k in spec.zip_keys:
            legend.append(k)
        else:
            facets.append(k)
    return ("legend" if legend else None), legend, facets


def labelled(done: pd.DataFrame, keys: list[str], spec: ReportSpec) -> tuple[pd.Series, list[str]]:
    """One label per row joining ``keys`` ('perceiver, learned'), and their order."""
    def text(row) -> str:
        return ", ".join(level_label(row[k]) for k in keys) if len(keys) > 1 else \
            level_label(row[keys[0]])

    labels = done.apply(text, axis=1)
    first = {}
    for k in keys:  # spec order of the first knob, then the others'
        first[k] = in_spec_order(done[k], spec.levels.get(k))
    rank = done.apply(lambda r: tuple(first[k].index(level_label(r[k])) for k in keys), axis=1)
    order = list(dict.fromkeys(labels[rank.sort_values(kind="stable").index]))
    return labels, order


def metric_vs_knob(frame: pd.DataFrame, spec: ReportSpec, x: str, hue: str | None,
                   out_dir: Path) -> list[Path]:
    done = completed(frame, spec.metric)
    if done.empty or x not in done or done[x].nunique() < 2:
        return []  # nothing completed (the tables list the failures), or nothing varies
    if hue and (hue not in done or done[hue].nunique() < 2):
        hue = None  # one level left among completed runs (the others failed): no legend
    legend, legend_keys, facets = layout(done, spec, x, hue)
    data = done[[*spec.knobs, "seed", "run_id", spec.metric]].copy()
    y = plotted(data, spec.metric)
    hue_order = None
    if legend:
        data["legend"], hue_order = labelled(data, legend_keys, spec)
    col = row = None
    if facets:
        data["facet"], col_order = labelled(data, facets, spec)
        col = "facet"
    numeric = pd.api.types.is_numeric_dtype(done[x]) and not pd.api.types.is_bool_dtype(done[x])
    grid = sns.FacetGrid(data, col=col, row=row, col_order=col_order if col else None,
                         col_wrap=min(3, len(col_order)) if col and len(col_order) > 1 else None,
                         height=3.8, aspect=1.4, sharey=True, despine=False)
    if numeric:
        grid.map_dataframe(sns.lineplot, x=x, y=y, hue=legend, hue_order=hue_order,
                           marker="o", errorbar=t_interval, err_style="bars",
                           palette="deep" if legend else None)
        values = sorted(data[x].dropna().unique())
        for ax in grid.axes.flat:
            if is_geometric(data[x]):
                ax.set_xscale("log", base=2)
            if len(values) <= 10:  # tick exactly the values that were run
                ax.set_xticks(values)
                ax.set_xticklabels([level_label(v) for v in values])
                ax.minorticks_off()
    else:
        data[x] = data[x].map(level_label)
        grid.map_dataframe(sns.pointplot, x=x, y=y, hue=legend, hue_order=hue_order,
                           order=in_spec_order(data[x], spec.levels.get(x)), errorbar=t_interval,
                           dodge=0.25 if legend else False, capsize=0.1,
                           palette="deep" if legend else None)
    if legend:
        grid.add_legend(title=", ".join(short(k) for k in legend_keys))
    if col:
        grid.set_titles(col_template=", ".join(short(k) for k in facets) + " = {col_name}")
    bounded = is_percent(spec.metric) and spec.metric != "gap"
    for ax in grid.axes.flat:
        ax.set_ylabel(label_of(spec.metric))
        ax.grid(alpha=0.3)
        if bounded:  # an interval may pass 0 or 100; the axis stays on what can happen
            low, high = ax.get_ylim()
            ax.set_ylim(max(low, 0.0), min(high, 100.0))
    width = max(60, int(grid.figure.get_figwidth() * 15))
    point = [x] + (["legend"] if legend else []) + (["facet"] if col else [])
    title = f"{spec.metric} vs {short(x)}: mean over seeds ({seeds_text(data, point)}); {BARS}"
    grid.figure.suptitle("\n".join([*textwrap.wrap(title, width),
                                    *textwrap.wrap(held_fixed(spec), width)]), fontsize=9)
    grid.tight_layout()
    return save(grid.figure, out_dir / f"{spec.metric.replace('/', '_')}_vs_{short(x)}",
                data, layout=False)


def seeds_text(data: pd.DataFrame, point: list[str]) -> str:
    """'n = 3 seeds per point': the rows of ``data`` (one completed run each) behind each
    drawn point, the rows sharing the ``point`` columns, counted rather than assumed."""
    sizes = data.groupby(point, dropna=False).size()
    lo, hi = int(sizes.min()), int(sizes.max())
    if lo == hi:
        return f"n = {lo} seed{'s' if lo > 1 else ''} per point"
    return f"n = {lo} to {hi} seeds per point"


def cell_label(frame: pd.DataFrame, spec: ReportSpec) -> pd.Series:
    """``"num_latents=8, position_encoding=learned"``: the knobs that vary among ``frame``."""
    knobs = [k for k in spec.knobs if k in frame and frame[k].nunique(dropna=False) > 1] or \
        [k for k in spec.knobs[:1] if k in frame] or ["model.kind"]
    return frame[knobs].apply(
        lambda r: ", ".join(f"{short(k)}={level_label(v)}" for k, v in r.items()), axis=1)


def learning_curves(frame: pd.DataFrame, curves: pd.DataFrame, spec: ReportSpec,
                    out_dir: Path) -> list[Path]:
    """Accuracy over steps per cell, over its completed runs only (a failed or stopped
    run's curve would bend the mean where it ends): the training batches' running window
    (augmented, with dropout), the fixed training subset evaluated, and the eval split.
    The legend counts each line's runs; a split logged once per run is drawn as markers."""
    done = frame[frame["status"] == "completed"]
    curves = curves[curves["run_id"].isin(set(done["run_id"]))]
    if curves.empty:
        return []
    labels = dict(zip(done["run_id"], cell_label(done, spec), strict=True))
    data = curves.assign(config=curves["run_id"].map(labels), **{
        "accuracy (%)": 100.0 * curves["accuracy"]})
    data["completed_runs"] = data.groupby("config")["run_id"].transform("nunique")
    line = data["config"] + data["completed_runs"].map(
        lambda n: f" (n = {n} completed run{'s' if n > 1 else ''})")
    order = list(dict.fromkeys(line[data["run_id"] == r].iloc[0] for r in done["run_id"]
                               if r in set(data["run_id"])))
    if len(order) > MAX_CURVE_CELLS:
        return []
    splits = [s for s in ("train", "train_eval", "eval") if s in set(data["split"])]
    palette = dict(zip(order, sns.color_palette("deep", len(order)), strict=True))
    fig, ax = plt.subplots(figsize=(7.6, 4.6))
    sns.lineplot(data=data, x="step", y="accuracy (%)", hue=line.rename("config"),
                 hue_order=order, palette=palette, style="split", style_order=splits,
                 errorbar=t_interval, err_kws={"alpha": 0.08}, ax=ax)
    mark_single_points(ax, data.assign(line=line), palette)
    means = data.groupby(["config", "split", "step"])["accuracy (%)"].mean()
    ax.set_ylim(max(0.0, means.min() - 10), min(100.0, means.max() + 10))  # bands may pass it
    lo, hi = int(data["completed_runs"].min()), int(data["completed_runs"].max())
    runs = f"n = {lo}" if lo == hi else f"n = {lo} to {hi}"
    ax.set_title(f"accuracy over steps, mean over completed runs ({runs} per line; bands: 95% "
                 "t interval): training batches (window,\naugmented), the training subset "
                 "evaluated, the eval split; the gap between the last two is overfitting\n"
                 + held_fixed(spec), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, out_dir / "curves", data)


def mark_single_points(ax: plt.Axes, data: pd.DataFrame, palette: dict[str, Any]) -> None:
    """A line with one step per run has no length: give it (and its split's legend entry)
    a marker, and its interval as a bar, so that what the legend lists can be seen."""
    steps = data.groupby(["line", "split"])["step"].nunique()
    single = steps[steps == 1]
    sparse = set(single.index.get_level_values("split"))
    for artist in ax.lines:  # the drawn lines, then seaborn's legend entries (no points)
        points = len(artist.get_xdata())
        if points == 1 or (points == 0 and artist.get_label() in sparse):
            artist.set_marker("o")
    for name, split in single.index:
        values = data.loc[(data["line"] == name) & (data["split"] == split)]
        mean, (low, high) = values["accuracy (%)"].mean(), t_interval(values["accuracy (%)"])
        ax.errorbar(values["step"].iloc[0], mean, yerr=[[mean - low], [high - mean]],
                    fmt="none", ecolor=palette[name], lw=1)


def pareto(frame: pd.DataFrame, spec: ReportSpec, out_dir: Path) -> list[Path]:
    """The metric against train FLOPs per example and against wall-clock seconds per run,
    one point per cell (mean over seeds), marker size = XLA's predicted memory; the
    Pareto front (``frontier``) is joined."""
    done = completed(frame, spec.metric)
    costs = [c for c in ("flops_per_example_analytic", "wall_seconds") if c in done]
    if done.empty or not costs:
        return []
    done["cell"] = cell_label(done, spec)
    memory = done["memory_predicted_bytes"] if "memory_predicted_bytes" in done else np.nan
    done["memory_GiB"] = pd.to_numeric(memory, errors="coerce") / 2**30
    y = plotted(done, spec.metric)
    cells = done.groupby("cell", sort=False).agg(
        metric=(y, "mean"), **{c: (c, "mean") for c in costs},
        memory_GiB=("memory_GiB", "max"))
    fig, axes = plt.subplots(1, len(costs), figsize=(6.2 * len(costs), 4.6), squeeze=False)
    sizes = cells["memory_GiB"].fillna(0)
    area = 30 + 270 * (sizes / sizes.max() if sizes.max() > 0 else sizes)
    for ax, cost in zip(axes[0], costs, strict=True):
        ax.scatter(cells[cost], cells["metric"], s=area, alpha=0.6,
                   c=sns.color_palette("deep", len(cells)))
        front = frontier(cells[cost], cells["metric"], spec.higher_is_better)
        ax.plot(cells.loc[front, cost], cells.loc[front, "metric"], "k--", lw=1,
                label="Pareto front: no other cell as good on both axes, better on one")
        for name, r in cells.iterrows():
            ax.annotate(name, (r[cost], r["metric"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        if is_geometric(cells[cost]):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel({"flops_per_example_analytic": "train FLOPs per example (analytic)",
                       "wall_seconds": "wall-clock seconds per run"}[cost])
        ax.set_ylabel(label_of(spec.metric))
        ax.margins(x=0.3, y=0.1)  # room for the labels
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{spec.metric} against cost, one point per cell (mean over seeds, "
                 f"{seeds_text(done, ['cell'])}); marker area: XLA's predicted train-step "
                 "memory\n" + held_fixed(spec), fontsize=9)
    data = done[["cell", *[k for k in spec.knobs if k in done], "seed", "run_id", spec.metric,
                 *costs, "memory_GiB"]]
    return save(fig, out_dir / f"{spec.metric.replace('/', '_')}_pareto", data)


def frontier(cost: pd.Series, metric: pd.Series, higher_is_better: bool) -> list[Any]:
    """Index labels of the Pareto front, by increasing cost: the points no other point
    dominates, i.e. none is at least as good on both axes and strictly better on one. A
    cell that costs the same as another and scores worse is dominated (learning-rate or
    encoding grids share one cost); exact duplicates dominate neither, so both stay.
    Points with a missing cost or metric are on no front."""
    sign = 1.0 if higher_is_better else -1.0
    c = pd.to_numeric(cost, errors="coerce")
    m = sign * pd.to_numeric(metric, errors="coerce")
    known = c.notna() & m.notna()
    c, m = c[known], m[known]
    front = [i for i in c.index
             if not ((c <= c[i]) & (m >= m[i]) & ((c < c[i]) | (m > m[i]))).any()]
    return sorted(front, key=lambda i: (c[i], -m[i]))


def all_figures(frame: pd.DataFrame, curves: pd.DataFrame, spec: ReportSpec,
                out_dir: Path) -> list[Path]:
    """Every figure of a report; PNG, SVG and CSV each."""
    sns.set_theme(style="whitegrid", context="notebook")
    paths: list[Path] = []
    knobs = spec.knobs or []
    order = [spec.x] + [k for k in knobs if k != spec.x] if spec.x else knobs
    for x in order:
        hue = spec.hue if x == spec.x else (spec.x if spec.x != x else None)
        paths += metric_vs_knob(frame, spec, x, hue if hue != x else None, out_dir)
    paths += learning_curves(frame, curves, spec, out_dir)
    paths += pareto(frame, spec, out_dir)
    return paths
