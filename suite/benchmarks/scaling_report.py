"""scaling.csv, a Markdown table and log-log plots with fitted slopes and the crossover."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from suite.benchmarks.scaling import crossover, fit_slope  # noqa: E402
from suite.errors import SuiteError  # noqa: E402
from suite.files import read_json, write_json_atomic, write_text_atomic  # noqa: E402

FLOPS = "flops_train_per_example_analytic"  # 3 x forward: right on every backend
PANELS = (
    (FLOPS, "train FLOPs per example (analytic, 3 x forward)", "flops"),
    ("step_seconds", "measured seconds per train step", "step_time"),
    ("memory_bytes", "memory (bytes): measured peak (device, else host RSS), else XLA's "
     "prediction", "memory"),
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
    for col in ("step_seconds", "peak_rss_bytes", "predicted_memory_bytes", "device_peak_bytes",
                "startup_seconds", "compile_seconds_measured"):
        if col not in frame:
            frame[col] = np.nan
    if FLOPS not in frame:  # written before the analytic train figure was recorded
        frame[FLOPS] = 3.0 * frame["flops_forward_analytic"]
    measured = frame["device_peak_bytes"].fillna(frame["peak_rss_bytes"])
    frame["memory_bytes"] = measured.fillna(frame["predicted_memory_bytes"])
    return frame


def plot(frame: pd.DataFrame, out: Path, title: str) -> list[Path]:
    sns.set_theme(style="whitegrid", context="notebook")
    paths = []
    for column, label, stem in PANELS:
        data = frame.dropna(subset=[column])
        data = data[data[column] > 0]
        if data.empty:
            continue
        fig, ax = plt.subplots(figsize=(6.6, 4.4))
        for model, group in data.groupby("model"):
            group = group.sort_values("M")
            slope = fit_slope(group["M"].to_numpy(float), group[column].to_numpy(float))
            name = f"{model} (slope {slope:.2f} for M ≥ 4096)" if slope is not None else model
            ax.plot(group["M"], group[column], marker="o", label=name)
            if column == "memory_bytes":  # hollow markers: predicted, not measured
                pred = group[group["device_peak_bytes"].isna() & group["peak_rss_bytes"].isna()]
                ax.scatter(pred["M"], pred[column], facecolors="white",
                           edgecolors="black", zorder=3, s=30)
        ax.set_xscale("log")
        ax.set_yscale("log")
        cross = crossover(data, column, _perceivers(data)[0]) if _perceivers(data) else None
        if cross is not None:
            ax.axvline(cross, color="grey", ls="--", lw=1)
            ax.text(cross, 0.5, f" crossover M ≈ {cross:,.0f}", transform=ax.get_xaxis_transform(),
                    fontsize=8, color="grey", rotation=90, va="center")
        ax.set_xlabel("input size M (items)")
        ax.set_ylabel(label, fontsize=9)
        ax.set_title(title + (" (hollow: predicted)" if column == "memory_bytes" else ""),
                     fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        for suffix in (".png", ".svg"):
            fig.savefig(out / f"{stem}_vs_M{suffix}", dpi=120)
            paths.append(out / f"{stem}_vs_M{suffix}")
        plt.close(fig)
    return paths


def write(rows: list[dict[str, Any]], out: Path, command: str, machine: str) -> dict[str, Any]:
    """Write scaling.csv (+ its provenance, scaling.json), scaling.md and the plots."""
    out.mkdir(parents=True, exist_ok=True)
    frame = frame_of(rows)
    write_text_atomic(out / "scaling.csv", frame.to_csv(index=False))
    write_json_atomic(out / "scaling.json", {"command": command, "machine": machine})
    return render(frame, out, command, machine)


def replot(out: Path) -> dict[str, Any]:
    """Rebuild scaling.md and the plots from a folder's scaling.csv, measuring nothing."""
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
    return render(frame_of(frame.to_dict("records")), out, command, machine)


def render(frame: pd.DataFrame, out: Path, command: str, machine: str) -> dict[str, Any]:
    """scaling.md and the plots from a scaling frame; the fitted slopes and crossovers."""
    slopes = {}
    for model, group in frame.groupby("model"):
        slopes[model] = fit_slope(group["M"].to_numpy(float), group[FLOPS].to_numpy(float))
    crosses = {p: crossover(frame, FLOPS, p) for p in _perceivers(frame)}
    seconds = lambda v: "—" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    table = pd.DataFrame({
        "model": frame["model"], "M": frame["M"].map(lambda v: f"{v:,}"),
        "grid": frame["index_dims"], "params": frame["params"].map(_human),
        "train FLOPs/ex (analytic)": frame[FLOPS].map(_human),
        "train FLOPs/ex (XLA)": frame["flops_per_example_xla"].map(_human),
        "predicted mem": frame["predicted_memory_bytes"].map(_bytes),
        "device peak": frame["device_peak_bytes"].map(_bytes),
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
        + ", ".join(f"{m} {s:.2f}" if s is not None else f"{m} —" for m, s in slopes.items())
        + ".",
        " ".join(f"FLOPs crossover of {p} with the Transformer: M ≈ {c:,.0f}."
                 for p, c in crosses.items() if c), "",
        f"- command: `{command}`", f"- machine: {machine}",
        f"- batch {int(frame['batch'].iloc[0])}; memory is XLA's predicted peak "
        "(arguments + outputs + temporaries), the measured device peak (accelerators) and "
        "the host process's peak RSS; the time budget bounds the timed steps, start-up "
        "(imports, model) and compilation are reported apart.", "",
    ]
    write_text_atomic(out / "scaling.md", "\n".join(lines))
    plot(frame, out, "Perceiver vs Transformer, train step, batch "
         f"{int(frame['batch'].iloc[0])}")
    return {"slopes": slopes, "crossover": crosses}
