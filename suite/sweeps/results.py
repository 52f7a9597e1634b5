"""Read run folders back into flat rows: the one source for results.csv and reports.

Only the run folders are authoritative; ``results.csv`` is rebuilt from them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from suite import provenance
from suite.errors import SuiteError
from suite.files import read_json, read_json_object, write_text_atomic

SUMMARY_FIELDS = (
    "params", "flops_per_step_analytic", "flops_per_step_xla", "flops_per_example_analytic",
    "flops_per_example_xla", "flops_forward_analytic", "achieved_flops_per_s", "mfu",
    "step_seconds", "examples_per_s", "compile_seconds", "trace_seconds", "device_peak_bytes",
    "peak_rss_bytes", "wall_seconds", "device", "machine", "memory_predicted_bytes",
    "achieved_flops_per_s_xla", "peak_flops_source", "peak_precision",
    "flops_count",  # "analytic", or why XLA's count stands in (a plugin without a count)
)


SEPARATORS = re.compile(r"[\[\]'\", x]+")  # how lists read back from results.csv
WHOLE = re.compile(r"(?<=\d)\.0+(?![\d])")  # 0.0 written inside a list's text
TEXT_FIELDS = {"device", "machine", "peak_flops_source", "peak_precision", "flops_count"}
NUMERIC_FIELDS = tuple(k for k in SUMMARY_FIELDS if k not in TEXT_FIELDS)


def run_status(run_dir: Path) -> str:
    """completed | failed | partial (has checkpoints) | pending."""
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            found = read_json(summary)
        except (OSError, ValueError):
            return "failed"
        return str(found.get("status", "failed")) if isinstance(found, dict) else "failed"
    ckpts = run_dir / "checkpoints"
    if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
        return "partial"
    return "pending"


def _flat_config(config: dict[str, Any]) -> dict[str, Any]:
    flat = {"seed": config.get("seed")}
    for section, values in config.items():
        if isinstance(values, dict):
            for k, v in values.items():
                flat[f"{section}.{k}"] = v
    return flat


def read_object(path: Path, *, strict: bool = False) -> dict[str, Any] | None:
    """A JSON file that should hold an object: the object, or None where the file is not
    JSON or holds something else; with ``strict``, one line naming the file instead."""
    try:
        return read_json_object(path)
    except SuiteError:
        if strict:
            raise
        return None


def _config_of(run_dir: Path, strict: bool) -> dict[str, Any] | None:
    """The trainer's config.json, else the runner's run.json (a run that never started)."""
    if (run_dir / "config.json").exists():
        return read_object(run_dir / "config.json", strict=strict)
    if not (run_dir / "run.json").exists():
        return None
    meta = read_object(run_dir / "run.json", strict=strict)
    config = meta.get("config") if meta else None
    if not isinstance(config, dict):
        if strict:
            raise SuiteError(f"{run_dir / 'run.json'}: config={config!r} is not an object of "
                             "config sections")
        return None
    return config


def _summary_of(path: Path, strict: bool) -> dict[str, Any]:
    """A summary.json whose metrics are an object: as it is, or (not strict) a failure."""
    summary = read_object(path, strict=strict)
    if summary is None:
        return {"status": "failed", "reason": "unreadable summary.json"}
    metrics = summary.get("metrics", {})
    if not isinstance(metrics, dict):
        if strict:
            raise SuiteError(f"{path}: metrics={metrics!r} is not an object of metric values")
        summary = {**summary, "metrics": {}}
    return summary


def read_run(run_dir: Path, *, strict: bool = False) -> dict[str, Any] | None:
    """One row: id, status, config columns (dotted), final metrics, cost figures.

    A config.json or summary.json that is not JSON, or not an object, drops the run (no
    config) or marks it failed (no summary); ``strict`` (a report) says which file instead.
    """
    run_dir = Path(run_dir)
    config = _config_of(run_dir, strict)
    if config is None:
        return None
    row: dict[str, Any] = {"run_id": run_dir.name, "status": run_status(run_dir)}
    meta = read_object(run_dir / "run.json") if (run_dir / "run.json").exists() else None
    if meta is not None and isinstance(meta.get("varied", {}), dict):
        row["varied"] = json.dumps(meta.get("varied", {}), sort_keys=True)
    row.update(_flat_config(config))
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = _summary_of(summary_path, strict)
        row["reason"] = summary.get("reason", "")
        row["step"] = summary.get("step")
        row.update(summary.get("metrics", {}))
        row.update({k: summary.get(k) for k in SUMMARY_FIELDS})
        if isinstance(summary.get("provenance"), dict) and summary["provenance"]:
            row["code"] = provenance.describe(summary["provenance"])
    if plugins := plugin_versions(config.get("plugins")):
        row["plugins"] = plugins
    return row


def plugin_versions(records: Any) -> str:
    """``"my_variants.py sha256 0123456789ab"`` for each plugin a config.json records
    (``suite.plugins.Plugin.record``), joined by "; ": runs of one cell trained with
    two versions of a plugin differ in this column."""
    if not isinstance(records, list):
        return ""
    out = []
    for item in records:
        if isinstance(item, dict) and item.get("plugin"):
            name = Path(str(item.get("path") or item["plugin"])).name
            sha = item.get("sha256")
            out.append(f"{name} sha256 {str(sha)[:12]}" if sha else name)
    return "; ".join(out)


def config_changes(row: dict[str, Any], expected: dict[str, Any],
                   derived: frozenset[str] | set[str] = frozenset()
                   ) -> list[tuple[str, Any, Any]]:
    """``[(key, expected value, the run's value)]`` for every config key the run records
    (a row of :func:`read_run`) with another value than ``expected`` (a flat config:
    what the grid recorded for that run id). A key either side lacks (one added since,
    a variant's knob at its default) is not a change. A run extended in place
    (``train --workdir OUT/runs/<id> train.steps=60``) has one: it is not the grid's
    run any more, so no figure may count it as a seed of its cell."""
    return [(k, v, row[k]) for k, v in expected.items()
            if k in row and k not in derived and (k == "seed" or "." in k)
            and same_text(row[k]) != same_text(v)]


def same_text(value: Any) -> str:
    """A config value as one text whether it comes from config.json, the grid's record or
    results.csv (which writes a list of lists as "['audio', [64]]x['video', [2, 4]]"):
    brackets, quotes and separators as one 'x', whole floats as ints, None, NaN and
    empty as 'none'."""
    if isinstance(value, dict):  # a per-modality value: as config.json's pairs read
        value = [[k, v] for k, v in value.items()]
    if isinstance(value, list | tuple | str) and not value:
        return "none"  # an empty mesh is no mesh, whichever way a version wrote it
    if isinstance(value, list | tuple):
        return _listed("x".join(map(same_text, value)))
    if value is None or (isinstance(value, float) and value != value):
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _listed(str(value)) if "[" in str(value) else str(value)


def _listed(text: str) -> str:
    """A list's text with one 'x' between its items and no '.0' after whole numbers."""
    return WHOLE.sub("", SEPARATORS.sub("x", text)).strip("x")


def read_runs(out: Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """Every run folder under ``out/runs`` (sorted by id); ``strict``: see :func:`read_run`."""
    runs_dir = Path(out) / "runs"
    if not runs_dir.is_dir():
        return []
    rows = [read_run(p, strict=strict) for p in sorted(runs_dir.iterdir()) if p.is_dir()]
    return [r for r in rows if r is not None]


def read_results_csv(out: Path) -> list[dict[str, Any]]:
    """The rows of ``out/results.csv``: the runs of a results folder whose run folders are
    not at hand (a clone of committed results: ``runs/`` is never committed), so its
    tables and figures can still be redrawn. Empty cells read as None."""
    path = Path(out) / "results.csv"
    if not path.is_file():
        return []
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise SuiteError(f"{path}: not a readable results table ({e})") from None
    if "run_id" not in frame or "status" not in frame:
        raise SuiteError(f"{path}: not a results table (no run_id and status columns)")
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict("records")


def write_results_csv(out: Path) -> Path:
    """Rebuild ``out/results.csv`` from the run folders, atomically."""
    rows = read_runs(out)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    path = Path(out) / "results.csv"
    write_text_atomic(path, buf.getvalue())
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return "x".join(map(str, v))
    return "" if v is None else v
