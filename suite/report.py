"""Results folder -> tidy DataFrame -> paper-style tables (Markdown, LaTeX, CSV) + HTML.

Reads the run folders themselves (never only ``results.csv``), so a report can always
be rebuilt. Seeds are aggregated as mean ± std (and n); failed or missing runs are
shown, never dropped. Imports nothing from the trainer.
"""

from __future__ import annotations

import base64
import html
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from suite.errors import SuiteError
from suite.files import read_jsonl, write_text_atomic
from suite.results import read_runs

BASE_METRICS = ("eval/accuracy", "eval/loss", "train/accuracy", "train/loss")
HIGHER_IS_BETTER = {"eval/accuracy": True, "train/accuracy": True, "gap": False,
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
    if "eval/accuracy" in frame and "train/accuracy" in frame:
        frame["gap"] = frame["train/accuracy"] - frame["eval/accuracy"]
    return frame


def report_spec(out: Path, frame: pd.DataFrame, *, metric: str | None = None,
                rows: list[str] | None = None, cols: list[str] | None = None) -> ReportSpec:
    """Rows, columns and metric: command-line choices, else the spec's [report], else inferred."""
    hints: dict[str, Any] = {}
    spec_text, name, description, knobs = "", Path(out).name, "", []
    spec_path = Path(out) / "spec.toml"
    if spec_path.exists():
        spec_text = spec_path.read_text()
        raw = tomllib.loads(spec_text)
        hints = raw.get("report", {})
        name, description = raw.get("name", name), raw.get("description", "")
        for section in ("grid", "zip"):
            knobs += _dotted(raw.get(section, {}))
    if not knobs:  # infer: config columns that take more than one value
        knobs = [c for c in frame.columns if "." in c and c not in NON_KNOBS
                 and not c.startswith(("eval/", "train/")) and frame[c].nunique(dropna=False) > 1]
    knobs = [k for k in knobs if k in frame.columns]
    metric = metric or hints.get("metric", "eval/accuracy")
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
    return ReportSpec(knobs, metric, list(rows), list(cols), x, hue, name, description, spec_text)


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
    metrics = [spec.metric] + [m for m in ("train/accuracy", "gap") if m != spec.metric]
    shown = pd.DataFrame({k: agg[k] for k in (spec.knobs or [])})
    best: dict[str, int] = {}
    for m in metrics:
        if f"{m} mean" not in agg:
            continue
        percent = m.endswith("accuracy") or m == "gap"
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
    percent = spec.metric.endswith("accuracy")
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


def provenance(frame: pd.DataFrame, out: Path, spec: ReportSpec) -> dict[str, str]:
    """How the numbers were made: the commands and the machine they ran on."""
    machines = sorted({m for m in frame.get("machine", pd.Series(dtype=str)).dropna()})
    spec_arg = f"ablations/{spec.name}.toml" if spec.name else "SPEC"
    return {
        "run": f"perceiver-suite run {spec_arg} --out {out}",
        "report": "perceiver-suite report " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and sys.argv[1] == "report" else f"perceiver-suite report {out}",
        "machine": "; ".join(machines) if machines else "unknown",
    }


def write_report(out: Path, *, metric: str | None = None, rows: list[str] | None = None,
                 cols: list[str] | None = None, plots: bool = True) -> dict[str, Path]:
    """Tables, plots and index.html into ``out/report/``. Returns the written paths."""
    out = Path(out)
    frame = load_frame(out)
    spec = report_spec(out, frame, metric=metric, rows=rows, cols=cols)
    metrics = [m for m in (*BASE_METRICS, "gap") if m in frame] + \
        ([spec.metric] if spec.metric not in BASE_METRICS else [])
    agg = aggregate(frame, spec.knobs, metrics)
    shown, best = paper_table(agg, spec)
    pivot = pivot_table(agg, spec)
    prov = provenance(frame, out, spec)
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    caption = (f"{spec.description or spec.name}: {spec.metric}, mean ± std over seeds "
               f"(n = completed/total runs). Machine: {prov['machine']}.")
    md = [f"# {spec.name}", "", spec.description, "", to_markdown(shown, best), ""]
    if pivot is not None:
        md += [f"## {spec.metric} (%): {', '.join(spec.rows)} × {', '.join(spec.cols)}", "",
               pivot.to_markdown(index=False), ""]
    failed = frame[frame["status"] == "failed"]
    if len(failed):
        md += ["## Failed runs", ""] + [f"- `{r.run_id}`: {r.reason}" for r in
                                        failed.itertuples()] + [""]
    md += ["## Provenance", "", f"- runs: `{prov['run']}`", f"- report: `{prov['report']}`",
           f"- machine: {prov['machine']}", ""]
    write_text_atomic(report_dir / "table.md", "\n".join(md))
    write_text_atomic(report_dir / "table.tex", to_latex(shown, best, caption))
    csv_frame = agg.copy()
    for label, i in best.items():
        csv_frame[f"best {label}"] = csv_frame.index == i
    write_text_atomic(report_dir / "table.csv", csv_frame.to_csv(index=False))
    write_text_atomic(report_dir / "runs.csv", frame.to_csv(index=False))
    written.update({"table.md": report_dir / "table.md", "table.tex": report_dir / "table.tex",
                    "table.csv": report_dir / "table.csv"})
    figures: list[Path] = []
    if plots:
        from suite import plots as plots_lib

        curves = _curves(out, frame)
        figures = plots_lib.all_figures(frame, curves, spec, report_dir)
    html_text = render_html(spec, shown, best, pivot, figures, prov, failed)
    write_text_atomic(report_dir / "index.html", html_text)
    written["index.html"] = report_dir / "index.html"
    for f in figures:
        written[f.name] = f
    return written


def _curves(out: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Long frame of metrics.jsonl rows: run_id, step, split, accuracy, loss."""
    parts = []
    for run_id in frame["run_id"]:
        for row in read_jsonl(Path(out) / "runs" / run_id / "metrics.jsonl"):
            for split in ("train", "eval"):
                if f"{split}/accuracy" in row:
                    parts.append({"run_id": run_id, "step": row["step"], "split": split,
                                  "accuracy": row[f"{split}/accuracy"],
                                  "loss": row[f"{split}/loss"]})
    return pd.DataFrame(parts, columns=["run_id", "step", "split", "accuracy", "loss"])


def render_html(spec: ReportSpec, shown: pd.DataFrame, best: dict[str, int],
                pivot: pd.DataFrame | None, figures: list[Path], prov: dict[str, str],
                failed: pd.DataFrame) -> str:
    """One self-contained page: spec, tables, figures inlined as base64 PNGs."""
    marked = shown.copy().astype(object).map(lambda v: html.escape(str(v)))
    for col, i in best.items():
        marked.loc[i, col] = f"<b>{marked.loc[i, col]}</b>"
    parts = [
        "<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>{html.escape(spec.name)} — perceiver-suite report</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border-bottom:1px solid #ccc;padding:4px 10px;text-align:right}"
        "th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto}"
        "img{max-width:100%;border:1px solid #eee;margin:.5em 0}</style></head><body>",
        f"<h1>{html.escape(spec.name)}</h1><p>{html.escape(spec.description)}</p>",
        f"<h2>Results: {html.escape(spec.metric)}</h2>",
        marked.to_html(index=False, escape=False, border=0),
    ]
    if pivot is not None:
        parts += [f"<h2>{html.escape(spec.metric)} (%) by {html.escape(', '.join(spec.cols))}</h2>",
                  pivot.to_html(index=False, border=0)]
    if len(failed):
        parts.append("<h2>Failed runs</h2><ul>" + "".join(
            f"<li><code>{html.escape(r.run_id)}</code>: {html.escape(str(r.reason))}</li>"
            for r in failed.itertuples()) + "</ul>")
    for fig in figures:
        if fig.suffix == ".png":
            data = base64.b64encode(fig.read_bytes()).decode()
            parts.append(f"<figure><img alt=\"{html.escape(fig.stem)}\" "
                         f"src=\"data:image/png;base64,{data}\"></figure>")
    parts += ["<h2>Provenance</h2><ul>",
              f"<li>runs: <code>{html.escape(prov['run'])}</code></li>",
              f"<li>report: <code>{html.escape(prov['report'])}</code></li>",
              f"<li>machine: {html.escape(prov['machine'])}</li></ul>"]
    if spec.spec_text:
        parts += ["<h2>Spec</h2>", f"<pre>{html.escape(spec.spec_text)}</pre>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def is_geometric(values: pd.Series) -> bool:
    """Positive numbers spanning a factor of 8 or more: plot on a log axis."""
    v = pd.to_numeric(values, errors="coerce").dropna().unique()
    return len(v) >= 3 and (v > 0).all() and v.max() / v.min() >= 8 and \
        bool(np.all(np.diff(np.sort(v)) > 0))
