"""A results folder -> ``report/``: table.md, table.tex, table.csv, runs.csv, seaborn plots
(each with its CSV) and one self-contained index.html (a jinja2 template, figures inlined).

A report is about one experiment (``suite.analysis.experiment``): the spec's runs,
missing ones listed; other run folders found there are listed apart, never averaged in.
Imports nothing from the trainer: everything comes from the run folders.
"""

from __future__ import annotations

import base64
import shlex
import sys
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from suite.analysis import experiment as experiment_lib
from suite.analysis import inputs
from suite.analysis.tables import (
    BASE_METRICS,
    ReportSpec,
    aggregate,
    label_of,
    paper_table,
    pivot_table,
    report_spec,
    to_latex,
    to_markdown,
    with_gap,
)
from suite.analysis.verdicts import significance, significance_notes
from suite.files import read_jsonl, write_text_atomic

TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("suite.analysis", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True,
    undefined=jinja2.StrictUndefined)
# a config key's last part as a column header ("model.num_latents" -> "num_latents")
TEMPLATES.filters["short"] = lambda key: key.rsplit(".", 1)[-1] if key.startswith(
    ("model.", "data.", "train.")) else key
RUN_FOLDER_FIGURES = ("curves.", "attention_")  # drawn from run folders only
REASONS = {"partial": "interrupted; rerun the spec to resume it",
           "pending": "not started",
           "missing": "no run folder: not started (another shard, or the grid was stopped)"}


def provenance(exp: experiment_lib.Experiment, out: Path) -> dict[str, Any]:
    """How the numbers were made: the commands, the machines, the code, where curves live."""
    frame = exp.frame
    machines = sorted({m for m in frame.get("machine", pd.Series(dtype=str)).dropna()})
    code = sorted({c for c in frame.get("code", pd.Series(dtype=str)).dropna()})
    has_events = any((Path(out) / "runs").glob("*/events.out.tfevents.*"))
    rec = exp.record
    spec_arg = rec.spec_path if rec and rec.spec_path else "SPEC"
    run = rec.command if rec and rec.command else f"perceiver-suite run {spec_arg} --out {out}"
    return {
        "run": run,
        "report": "perceiver-suite report " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        if len(sys.argv) > 2 and sys.argv[1] == "report" else f"perceiver-suite report {out}",
        "machine": "; ".join(machines) if machines else "unknown",
        "code": code or ["unrecorded (runs made before versions were recorded)"],
        "runs_from": exp.source,
        "tensorboard": f"tensorboard --logdir {Path(out) / 'runs'}" if has_events else "",
        "plugins": sorted({p for p in frame.get("plugins", pd.Series(dtype=str)).dropna()
                           if p}),
    }


def mixed_plugins(frame: pd.DataFrame, knobs: list[str]) -> list[str]:
    """A note for each cell whose completed runs were trained with different versions of a
    plugin (its file's SHA-256, as each run's config.json records it). They stay in the
    cell (which version is the right one is the user's call, not the report's), but the
    table says the mean mixes them and which runs ran which."""
    if "plugins" not in frame:
        return []
    done = frame[(frame["status"] == "completed") & frame["plugins"].notna()]
    lines = []
    groups = done.groupby(knobs, dropna=False, sort=False) if knobs else [((), done)]
    for cell, runs in groups:
        versions = list(dict.fromkeys(runs["plugins"]))
        if len(versions) < 2:
            continue
        values = cell if isinstance(cell, tuple) else (cell,)
        where = ", ".join(f"{k}={v}" for k, v in zip(knobs, values, strict=True)) or "all"
        which = "; ".join(f"{v} ({', '.join(runs.loc[runs['plugins'] == v, 'run_id'])})"
                          for v in versions)
        lines.append(f"The cell {where} mixes runs of {len(versions)} versions of its "
                     f"plugins: {which}. Its mean is not of one code; rerun the cell's runs "
                     "with one version (move the others out of runs/).")
    return lines


def curves(out: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Long frame of metrics.jsonl rows: run_id, step, split, accuracy, loss."""
    parts = []
    for run_id in frame.loc[~frame["status"].isin(experiment_lib.ABSENT), "run_id"]:
        for row in read_jsonl(Path(out) / "runs" / run_id / "metrics.jsonl"):
            for split in ("train", "train_eval", "eval"):
                if f"{split}/accuracy" in row:
                    parts.append({"run_id": run_id, "step": row["step"], "split": split,
                                  "accuracy": row[f"{split}/accuracy"],
                                  "loss": row[f"{split}/loss"]})
    return pd.DataFrame(parts, columns=["run_id", "step", "split", "accuracy", "loss"])


def kept_figures(out: Path, report_dir: Path) -> list[Path]:
    """The learning curves and attention maps an earlier report drew, where ``out`` has no
    run folders (a clone redrawing from its results.csv): they are drawn from the run
    folders' metrics and checkpoints, so here they cannot be redrawn, but are not stale."""
    runs = out / "runs"
    if (runs.is_dir() and any(p.is_dir() for p in runs.iterdir())) or not report_dir.is_dir():
        return []
    return sorted(f for f in report_dir.iterdir() if f.name.startswith(RUN_FOLDER_FIGURES)
                  and f.suffix in (".png", ".svg", ".csv"))


def notes(spec: ReportSpec, agg: pd.DataFrame, frame: pd.DataFrame | None = None
          ) -> list[str]:
    """What the table's numbers are, in words (``frame``: the runs, for how FLOPs were
    counted)."""
    return [
        f"{label_of(spec.metric)}: mean ± std over the completed seeds of each cell "
        "(n = completed/total runs); 95% CI: the t interval of that mean (none for one seed).",
        *significance_notes(spec, agg),
        "train, evaluated: a fixed training subset evaluated as the eval split is (no "
        "augmentation, no dropout); gap: that minus the eval accuracy.",
        *(xla_counted(frame) if frame is not None else []),
        *(validation_split(frame) if frame is not None else []),
        *(mixed_plugins(frame, spec.knobs) if frame is not None else []),
    ]


def validation_split(frame: pd.DataFrame) -> list[str]:
    """Where the eval metrics come from a validation split (``data.eval_split``), not the
    task's eval (test) split: a reader must not take them for test accuracy."""
    if "data.eval_split" not in frame:
        return []
    known = frame[frame["data.eval_split"].notna()]  # runs not yet started carry no config
    held = known[known["data.eval_split"] == "validation"]
    if held.empty:
        return []
    shares = ", ".join(f"{f:g}" for f in sorted(held["data.eval_fraction"].dropna().unique()))
    which = "every run" if len(held) == len(known) else f"{len(held)} of {len(known)} runs"
    return [f"eval/*: in {which}, a validation split (data.eval_split=validation): "
            f"{shares} of the training split held out, class-stratified, the same examples "
            "for every seed; no run was evaluated on the task's test split."]


def xla_counted(frame: pd.DataFrame) -> list[str]:
    """Where FLOPs/example is XLA's count of the compiled forward pass (a registered model
    or part without an analytic count, ``suite.extend``), and why."""
    counts = frame.get("flops_count", pd.Series(dtype=object)).dropna().astype(str)
    why = sorted({c.removeprefix("XLA's count: ") for c in counts if c != "analytic"})
    return [f"FLOPs/example: XLA's count of the compiled forward pass where there is no "
            f"analytic one ({'; '.join(why)})."] if why else []


def write_report(out: Path, *, metric: str | None = None, rows: list[str] | None = None,
                 cols: list[str] | None = None, plots: bool = True,
                 reference: dict[str, str] | None = None,
                 attention: bool = False) -> dict[str, Path]:
    """Tables, plots and index.html into ``out/report/``. Returns the written paths."""
    out = Path(out)
    exp = experiment_lib.load(out)
    frame = inputs.metric_checked(out, with_gap(exp.frame), metric)
    spec = report_spec(out, exp, metric=metric, rows=rows, cols=cols, reference=reference)
    metrics = [m for m in (*BASE_METRICS, "gap") if m in frame] + \
        ([spec.metric] if spec.metric not in (*BASE_METRICS, "gap") else [])
    agg = significance(aggregate(frame, spec.knobs, metrics), frame, spec)
    shown, tied = paper_table(agg, spec)
    bold = [label_of(spec.metric)]
    pivot = pivot_table(agg, spec)
    prov = provenance(exp, out)
    not_completed = live(out, frame[~frame["status"].isin(["completed", "does_not_fit"])])
    too_big = frame[frame["status"] == "does_not_fit"]
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    figures: list[Path] = []
    said = notes(spec, agg, frame)
    kept = kept_figures(out, report_dir) if plots else []
    if kept:
        said.append("Learning curves and attention maps need the run folders, which this "
                    "folder does not have: kept as an earlier report drew them ("
                    + ", ".join(f.name for f in kept if f.suffix == ".png") + ").")
    if plots:
        from suite.analysis import plots as plots_lib

        figures = plots_lib.all_figures(frame, curves(out, frame), spec, report_dir)
        if attention:  # each cell's cross-attention maps (the run folders' checkpoints)
            from suite.analysis.attention import report_figures

            figures += report_figures(out, frame, spec, report_dir)
        if len(agg) > plots_lib.MAX_CURVE_CELLS:
            said.append(f"No learning-curve figure: {len(agg)} cells are more lines than one "
                        f"figure can show ({plots_lib.MAX_CURVE_CELLS}); every run's curves "
                        "are in its metrics.jsonl and TensorBoard.")
    caption = (f"{spec.description or spec.name}: {spec.metric}, mean ± std over seeds (n = "
               "completed/total runs); bold: tied with the best cell (p >= 0.05, Holm-adjusted). "
               f"Machine: {prov['machine']}.")
    written = {
        "table.md": markdown(spec, shown, tied, bold, pivot, not_completed, too_big, exp, prov,
                             said),
        "table.tex": to_latex(shown, tied, bold, caption),
        "table.csv": agg.to_csv(index=False),
        "runs.csv": frame.to_csv(index=False),
        "index.html": render_html(spec, shown, tied, bold, pivot, figures + kept, prov,
                                  not_completed, too_big, exp, said),
    }
    for name, text in written.items():
        write_text_atomic(report_dir / name, text)
    paths = {name: report_dir / name for name in written}
    paths.update({f.name: f for f in figures})
    for stale in report_dir.iterdir():  # figures an earlier report drew and this one did not
        if stale.suffix in (".png", ".svg", ".csv") and stale.name not in paths and \
                stale.name != "index_rendered.png" and stale not in kept:
            stale.unlink()
    return paths


def markdown(spec: ReportSpec, shown: pd.DataFrame, tied: list[bool], bold: list[str],
             pivot: tuple[pd.DataFrame, list[list[bool]]] | None, not_completed: pd.DataFrame,
             too_big: pd.DataFrame, exp: experiment_lib.Experiment, prov: dict[str, Any],
             notes: list[str]) -> str:
    md = [f"# {spec.name}", "", spec.description, "", to_markdown(shown, tied, bold), ""]
    md += [f"- {n}" for n in notes] + [""]
    if pivot is not None:
        table, marks = pivot
        md += [f"## {label_of(spec.metric)}: {', '.join(spec.rows)} × {', '.join(spec.cols)}",
               "", _bold_cells(table, marks).to_markdown(index=False), ""]
    if len(not_completed):
        md += ["## Runs of this spec that did not complete", ""] + [
            f"- `{r.run_id}` ({r.status}): {_reason(r)}" for r in not_completed.itertuples()] + [""]
    if len(too_big):
        md += ["## Runs of this spec that do not fit this machine", ""] + [
            f"- `{r.run_id}`: {_reason(r)}" for r in too_big.itertuples()] + [""]
    if len(exp.others):
        md += ["## Run folders not in this spec (not averaged in)", ""] + [
            f"- {g['differs']}: {g['count']} ({g['statuses']}): "
            + ", ".join(f"`{i}`" for i in g["ids"]) for g in grouped(exp.others)] + [""]
    md += ["## Provenance", "", f"- runs: `{prov['run']}`", f"- report: `{prov['report']}`",
           f"- run set: {prov['runs_from']}", f"- machine: {prov['machine']}"]
    md += [f"- code: {c}" for c in prov["code"]]
    md += [f"- plugins: {p}" for p in prov["plugins"]]
    if len(prov["plugins"]) > 1:
        md.append("- the runs were trained with different plugin versions (see the notes)")
    if prov["tensorboard"]:
        md.append(f"- training curves of every run in TensorBoard: `{prov['tensorboard']}`")
    return "\n".join(md + [""])


def _bold_cells(table: pd.DataFrame, marks: list[list[bool]]) -> pd.DataFrame:
    """The pivot's metric cells tied with the best in bold."""
    out = table.copy().astype(object)
    first = len(table.columns) - len(marks[0]) if marks else 0
    for i, row in enumerate(marks):
        for j, mark in enumerate(row):
            if mark:
                out.iloc[i, first + j] = f"**{out.iloc[i, first + j]}**"
    return out


def grouped(others: pd.DataFrame) -> list[dict[str, Any]]:
    """Other run folders by how they differ from the spec: a quick look's runs, together."""
    out = []
    for differs, runs in others.groupby("differs", sort=False):
        counts = runs["status"].value_counts()
        out.append({"differs": differs, "ids": list(runs["run_id"]),
                    "count": f"{len(runs)} run folder{'s' if len(runs) > 1 else ''}",
                    "statuses": ", ".join(f"{n} {s}" for s, n in counts.items())})
    return out


def live(out: Path, runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with "training now" as the reason of each one a live process trains."""
    from suite.training.lock import training_now

    reasons = [f"training now (process {who.split()[1]} on {who.split()[0]})"
               if status in ("partial", "pending") and (who := training_now(
                   Path(out) / "runs" / run_id)) else reason
               for run_id, status, reason in zip(
                   runs["run_id"], runs["status"],
                   runs["reason"] if "reason" in runs else [""] * len(runs), strict=True)]
    return runs.assign(reason=reasons)


def _reason(row: Any) -> str:
    reason = getattr(row, "reason", "")
    if isinstance(reason, str) and reason:
        return reason
    return REASONS.get(row.status, "")


def render_html(spec: ReportSpec, shown: pd.DataFrame, tied: list[bool], bold: list[str],
                pivot: tuple[pd.DataFrame, list[list[bool]]] | None, figures: list[Path],
                prov: dict[str, Any], not_completed: pd.DataFrame, too_big: pd.DataFrame,
                exp: experiment_lib.Experiment, notes: list[str]) -> str:
    """One self-contained page: the tables, the figures inlined as base64 PNGs, the spec."""
    table = {"columns": list(shown.columns), "tied": tied,
             "rows": [[(str(row[c]), tied[i] and c in bold) for c in shown.columns]
                      for i, row in shown.reset_index(drop=True).iterrows()]}
    pivot_view = None
    if pivot is not None:
        frame, marks = pivot
        first = len(frame.columns) - (len(marks[0]) if marks else 0)
        pivot_view = {"columns": list(frame.columns), "rows": [
            [(str(v), j >= first and marks[i][j - first]) for j, v in enumerate(row)]
            for i, row in enumerate(frame.astype(str).values.tolist())]}
    return TEMPLATES.get_template("report.html.j2").render(
        spec=spec, table=table, pivot=pivot_view, prov=prov, notes=notes,
        not_completed=[{"run_id": r.run_id, "status": r.status, "reason": _reason(r)}
                       for r in not_completed.itertuples()],
        too_big=[{"run_id": r.run_id, "reason": _reason(r)} for r in too_big.itertuples()],
        others=grouped(exp.others),
        figures=[{"name": f.stem, "data": base64.b64encode(f.read_bytes()).decode()}
                 for f in figures if f.suffix == ".png"])
