"""A results folder -> ``report/``: table.md, table.tex, table.csv, runs.csv, seaborn plots
and one self-contained index.html (a jinja2 template, figures inlined).

Imports nothing from the trainer: everything comes from the run folders.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from suite.analysis.tables import (
    BASE_METRICS,
    ReportSpec,
    aggregate,
    load_frame,
    paper_table,
    pivot_table,
    report_spec,
    to_latex,
    to_markdown,
)
from suite.files import read_json, read_jsonl, write_text_atomic

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("suite.analysis", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True,
    undefined=jinja2.StrictUndefined)


def provenance(frame: pd.DataFrame, out: Path, spec: ReportSpec) -> dict[str, str]:
    """How the numbers were made: the commands, the machine, where the curves live."""
    machines = sorted({m for m in frame.get("machine", pd.Series(dtype=str)).dropna()})
    spec_arg = f"ablations/{spec.name}.toml" if spec.name else "SPEC"
    has_events = any((Path(out) / "runs").glob("*/events.out.tfevents.*"))
    run = f"perceiver-suite run {spec_arg} --out {out}"
    grid = Path(out) / "grid.json"  # what the runner recorded, where it recorded it
    if grid.exists():
        with contextlib.suppress(OSError, ValueError, KeyError):
            run = read_json(grid)["command"]
    return {
        "run": run,
        "report": "perceiver-suite report " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and sys.argv[1] == "report" else f"perceiver-suite report {out}",
        "machine": "; ".join(machines) if machines else "unknown",
        "tensorboard": f"tensorboard --logdir {Path(out) / 'runs'}" if has_events else "",
    }


def curves(out: Path, frame: pd.DataFrame) -> pd.DataFrame:
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
    not_completed = frame[~frame["status"].isin(["completed", "does_not_fit"])]
    too_big = frame[frame["status"] == "does_not_fit"]
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "table.md": markdown(spec, shown, best, pivot, not_completed, too_big, prov),
        "table.tex": to_latex(shown, best, f"{spec.description or spec.name}: {spec.metric}, "
                              "mean ± std over seeds (n = completed/total runs). Machine: "
                              f"{prov['machine']}."),
        "table.csv": agg.assign(**{f"best {label}": agg.index == i
                                   for label, i in best.items()}).to_csv(index=False),
        "runs.csv": frame.to_csv(index=False),
    }
    for name, text in written.items():
        write_text_atomic(report_dir / name, text)
    paths = {name: report_dir / name for name in written}
    figures: list[Path] = []
    if plots:
        from suite.analysis import plots as plots_lib

        figures = plots_lib.all_figures(frame, curves(out, frame), spec, report_dir)
    write_text_atomic(report_dir / "index.html",
                      render_html(spec, shown, best, pivot, figures, prov, not_completed,
                                  too_big))
    paths["index.html"] = report_dir / "index.html"
    paths.update({f.name: f for f in figures})
    return paths


def markdown(spec: ReportSpec, shown: pd.DataFrame, best: dict[str, int],
             pivot: pd.DataFrame | None, not_completed: pd.DataFrame, too_big: pd.DataFrame,
             prov: dict[str, str]) -> str:
    md = [f"# {spec.name}", "", spec.description, "", to_markdown(shown, best), ""]
    if pivot is not None:
        md += [f"## {spec.metric} (%): {', '.join(spec.rows)} × {', '.join(spec.cols)}", "",
               pivot.to_markdown(index=False), ""]
    if len(not_completed):
        md += ["## Runs that did not complete", ""] + [
            f"- `{r.run_id}` ({r.status}): {_reason(r)}" for r in not_completed.itertuples()] + [""]
    if len(too_big):
        md += ["## Runs that do not fit this machine", ""] + [
            f"- `{r.run_id}`: {_reason(r)}" for r in too_big.itertuples()] + [""]
    md += ["## Provenance", "", f"- runs: `{prov['run']}`", f"- report: `{prov['report']}`",
           f"- machine: {prov['machine']}"]
    if prov["tensorboard"]:
        md.append(f"- training curves of every run in TensorBoard: `{prov['tensorboard']}`")
    return "\n".join(md + [""])


def _reason(row: Any) -> str:
    reason = getattr(row, "reason", "")
    if isinstance(reason, str) and reason:
        return reason
    return {"partial": "interrupted; rerun the spec to resume it",
            "pending": "not started"}.get(row.status, "")


def render_html(spec: ReportSpec, shown: pd.DataFrame, best: dict[str, int],
                pivot: pd.DataFrame | None, figures: list[Path], prov: dict[str, str],
                not_completed: pd.DataFrame, too_big: pd.DataFrame) -> str:
    """One self-contained page: the spec, the tables, the figures inlined as base64 PNGs."""
    table = {"columns": list(shown.columns),
             "rows": [[(str(row[c]), best.get(c) == i) for c in shown.columns]
                      for i, row in shown.reset_index(drop=True).iterrows()]}
    pivot_view = None if pivot is None else {
        "columns": list(pivot.columns), "rows": pivot.astype(str).values.tolist()}
    return TEMPLATES.get_template("report.html.j2").render(
        spec=spec, table=table, pivot=pivot_view, prov=prov,
        not_completed=[{"run_id": r.run_id, "status": r.status, "reason": _reason(r)}
                       for r in not_completed.itertuples()],
        too_big=[{"run_id": r.run_id, "reason": _reason(r)} for r in too_big.itertuples()],
        figures=[{"name": f.stem, "data": base64.b64encode(f.read_bytes()).decode()}
                 for f in figures if f.suffix == ".png"])
