"""scaling.csv, a Markdown table and log-log plots with fitted slopes and the crossover.

Each plotted line is one measure: FLOPs (analytic), measured step time, and memory as
XLA's predicted peak at every size, with the device's measured peak as a line of its own
where an accelerator reports one. The host's RSS (the Python process, JAX included) is a
column of the table and the CSV only: beside a step's memory it measures the runtime."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from suite.analysis.plots import save  # noqa: E402
from suite.benchmarks.scaling import crossover, fit_slope  # noqa: E402
from suite.errors import SuiteError  # noqa: E402
from suite.files import read_json, write_json_atomic, write_text_atomic  # noqa: E402

FLOPS = "flops_train_per_example_analytic"  # 3 x forward: right on every backend
MEMORY = "predicted_memory_bytes"  # XLA's compiled memory_analysis: known at every point
DEVICE_PEAK = "device_peak_bytes"  # the allocator's peak where an accelerator reports one


@dataclasses.dataclass(frozen=True)
class Panel:
    """One figure: one measure per line, fitted and crossed on that measure alone."""

    column: str  # the measure each model's line draws
    label: str  # its axis label
    stem: str  # file name: <stem>_vs_M.{png,svg,csv}
    measure: str = ""  # the line's measure in the legend, where a second one is beside it
    beside: str | None = None  # a second measure, drawn apart (dashed, hollow) where present
    beside_label: str = ""
    note: str = ""  # a title line saying what is (and is not) drawn


PANELS = (
    Panel(FLOPS, "train FLOPs per example (analytic, 3 x forward)", "flops"),
    Panel("step_seconds", "measured seconds per train step", "step_time"),
    # The host's RSS (Python and JAX, ~800 MB before any step) is no measure of the step:
    # it stays in the table and the CSV, never on this figure.
    Panel(MEMORY, "train-step memory (bytes)", "memory", measure="XLA's predicted peak",
          beside=DEVICE_PEAK, beside_label="measured device peak",
          note="solid: XLA's predicted peak at every M; dashed: the measured device peak, "
               "where an accelerator reports one; the host's RSS (Python and JAX included) "
               "is in scaling.md only"),
)


def _human(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    for suffix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}"
    return f"{x:.3g}"


def _bytes(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "—"
    for suffix, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if x >= scale:
            return f"{x / scale:.2f} {suffix}"
    return f"{x / 2**10:.0f} KiB"


def _perceivers(frame: pd.DataFrame) -> list[str]:
    return sorted(m for m in frame["model"].unique() if str(m).startswith("perceiver"))


def frame_of(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in ("step_seconds", "peak_rss_bytes", MEMORY, DEVICE_PEAK,
                "startup_seconds", "compile_seconds_measured"):
        if col not in frame:
            frame[col] = np.nan
    if FLOPS not in frame:  # written before the analytic train figure was recorded
        frame[FLOPS] = 3.0 * frame["flops_forward_analytic"]
    # CSVs written before the memory figure drew one measure carry a measured-else-predicted
    # mix; each measure it mixed is a column of its own.
    return frame.drop(columns=["memory_bytes"], errors="ignore")


def _positive(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    values = pd.to_numeric(frame[column], errors="coerce")
    return frame[values.notna() & (values > 0)]


def figure(frame: pd.DataFrame, panel: Panel, title: str
           ) -> tuple[plt.Figure, pd.DataFrame] | None:
    """One log-log panel: each model's line is ``panel.column`` at every M that has it,
    with its slope and the crossover fitted on that measure alone; ``panel.beside`` is a
    line of its own (dashed, hollow) where it was measured. Returns the figure and the
    points it draws (model, M, measure, value), or None where there are none."""
    data = _positive(frame, panel.column)
    if data.empty:
        return None
    colours = dict(zip(sorted(frame["model"].unique()), sns.color_palette("deep"), strict=False))
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    drawn = []
    for model, group in data.groupby("model"):
        group = group.sort_values("M")
        slope = fit_slope(group["M"].to_numpy(float), group[panel.column].to_numpy(float))
        name = model + (f": {panel.measure}" if panel.measure else "") + \
            (f" (slope {slope:.2f} for M ≥ 4096)" if slope is not None else "")
        ax.plot(group["M"], group[panel.column], marker="o", color=colours[model], label=name)
        drawn.append(pd.DataFrame({"model": model, "M": group["M"], "measure": panel.column,
                                   "value": group[panel.column]}))
    for model, group in frame.groupby("model"):
        beside = _positive(group, panel.beside).sort_values("M") if panel.beside else group[:0]
        if not beside.empty:
            ax.plot(beside["M"], beside[panel.beside], ls="--", marker="s", mfc="white",
                    color=colours[model], label=f"{model}: {panel.beside_label}")
            drawn.append(pd.DataFrame({"model": model, "M": beside["M"], "measure": panel.beside,
                                       "value": beside[panel.beside]}))
    ax.set_xscale("log")
    ax.set_yscale("log")
    cross = crossover(data, panel.column, _perceivers(data)[0]) if _perceivers(data) else None
    if cross is not None:
        ax.axvline(cross, color="grey", ls="--", lw=1)
        ax.text(cross, 0.5, f" crossover M ≈ {cross:,.0f}", transform=ax.get_xaxis_transform(),
                fontsize=8, color="grey", rotation=90, va="center")
    ax.set_xlabel("input size M (items)")
    ax.set_ylabel(panel.label, fontsize=9)
    ax.set_title("\n".join([title, *textwrap.wrap(panel.note, 90)]), fontsize=8)
    ax.legend(fontsize=7)
    return fig, pd.concat(drawn, ignore_index=True)


def plot(frame: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """Each panel's PNG and SVG, and its drawn points as ``<stem>_vs_M.csv``."""
    sns.set_theme(style="whitegrid", context="notebook")
    paths = []
    for panel in PANELS:
        drawn = figure(frame, panel, title)
        if drawn is not None:
            paths += save(drawn[0], out / f"{panel.stem}_vs_M", drawn[1])
    return paths


def write(rows: list[dict[str, Any]], out: Path, command: str, machine: str) -> dict[str, Any]:
    """Write scaling.csv (+ its provenance, scaling.json), scaling.md and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    frame = frame_of(rows)
    write_text_atomic(out / "scaling.csv", frame.to_csv(index=False))
    write_json_atomic(out / "scaling.json", {"command": command, "machine": machine})
    return render(frame, out, command, machine)


def replot(out: Path) -> dict[str, Any]:
    """Rebuild scaling.md and the plots from a folder's scaling.csv, measuring nothing;
    the CSV is written back in the current columns (older ones carried a mixed memory
    column, measured-else-predicted, that no figure draws any more)."""
    csv_path, meta_path = out / "scaling.csv", out / "scaling.json"
    for path in (csv_path, meta_path):
        if not path.exists():
            raise SuiteError(f"{path}: not found; run `perceiver-suite scaling --out {out}` first")
    try:
        frame = pd.read_csv(csv_path)
        meta = read_json(meta_path)
        command, machine = meta["command"], meta["machine"]
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise SuiteError(f"{out}: unreadable scaling.csv or scaling.json ({e})") from None
    frame = frame_of(frame.to_dict("records"))
    write_text_atomic(csv_path, frame.to_csv(index=False))
    return render(frame, out, command, machine)


def fits(frame: pd.DataFrame, column: str) -> tuple[dict[str, float | None],
                                                   dict[str, float | None]]:
    """Each model's log-log slope of ``column`` for M >= 4096, and each Perceiver's
    crossover with the Transformer, both on ``column`` alone."""
    data = _positive(frame, column)
    slopes = {model: fit_slope(group["M"].to_numpy(float), group[column].to_numpy(float))
              for model, group in data.groupby("model")}
    return slopes, {p: crossover(data, column, p) for p in _perceivers(data)}


def _listed(slopes: dict[str, float | None]) -> str:
    return ", ".join(f"{m} {s:.2f}" if s is not None else f"{m} —" for m, s in slopes.items())


def render(frame: pd.DataFrame, out: Path, command: str, machine: str) -> dict[str, Any]:
    """scaling.md and the plots from a scaling frame; the fitted slopes and crossovers of
    the train FLOPs and of XLA's predicted memory."""
    slopes, crosses = fits(frame, FLOPS)
    memory_slopes, memory_crosses = fits(frame, MEMORY)
    seconds = lambda v: "—" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    table = pd.DataFrame({
        "model": frame["model"], "M": frame["M"].map(lambda v: f"{v:,}"),
        "grid": frame["index_dims"], "params": frame["params"].map(_human),
        "train FLOPs/ex (analytic)": frame[FLOPS].map(_human),
        "train FLOPs/ex (XLA)": frame["flops_per_example_xla"].map(_human),
        "predicted mem": frame[MEMORY].map(_bytes),
        "device peak": frame[DEVICE_PEAK].map(_bytes),
        "host RSS": frame["peak_rss_bytes"].map(_bytes),
        "start s": frame["startup_seconds"].map(lambda v: "—" if pd.isna(v) else f"{v:.1f}"),
        "compile s": frame["compile_seconds_measured"].fillna(frame["compile_seconds"])
        .map(lambda v: "—" if pd.isna(v) else f"{v:.1f}"),
        "s/step": frame["step_seconds"].map(seconds),
        "status": frame["status"],
    })
    lines = [
        "# Compute scaling: Perceiver vs Transformer", "",
        table.to_markdown(index=False), "",
        "Fitted log-log slopes of analytic train FLOPs per example (3 x forward, the "
        "convention of the scaling-law papers; XLA's count beside it) for M ≥ 4096: "
        f"{_listed(slopes)}.",
        " ".join(f"FLOPs crossover of {p} with the Transformer: M ≈ {c:,.0f}."
                 for p, c in crosses.items() if c), "",
        f"Fitted log-log slopes of XLA's predicted train-step memory for M ≥ 4096: "
        f"{_listed(memory_slopes)}.",
        " ".join(f"Memory crossover of {p} with the Transformer: M ≈ {c:,.0f}."
                 for p, c in memory_crosses.items() if c), "",
        f"- command: `{command}`", f"- machine: {machine}",
        f"- batch {int(frame['batch'].iloc[0])}; memory is XLA's predicted peak "
        "(arguments + outputs + temporaries) at every size, the measured device peak where "
        "an accelerator reports one, and the host process's peak RSS (Python and JAX "
        "included, so not the step's memory: in this table only, never on the figure); the "
        "time budget bounds the timed steps, start-up (imports, model) and compilation are "
        "reported apart.", "",
    ]
    write_text_atomic(out / "scaling.md", "\n".join(lines))
    plot(frame, out, "Perceiver vs Transformer, train step, batch "
         f"{int(frame['batch'].iloc[0])}")
    return {"slopes": slopes, "crossover": crosses, "memory_slopes": memory_slopes,
            "memory_crossover": memory_crosses}
