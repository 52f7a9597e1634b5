"""What a report reads, checked before anything is drawn: the folder's ``spec.toml`` (its
TOML, the types of the keys a report uses, the ``[report]`` keys against the grid's), the
values run folders (or ``results.csv``) give for metrics, and the metric asked for.

Each mistake is one :class:`SuiteError` naming the file, the key and the value, with the
nearest valid key where a name is misspelt, so ``report`` and ``compare`` exit 2 with one
line instead of a traceback deep in pandas, or a plot that quietly changed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pandas as pd

from suite.config.overrides import did_you_mean
from suite.errors import SuiteError
from suite.sweeps.record import SPEC_COPY
from suite.sweeps.report_keys import check_report_keys as check_named_keys
from suite.sweeps.report_keys import check_report_types
from suite.sweeps.results import NUMERIC_FIELDS

SPLITS = ("eval/", "train/", "train_eval/")  # what a metric's name starts with


def read_spec_copy(out: Path) -> dict[str, Any]:
    """``OUT/spec.toml`` parsed, with the types a report relies on checked; ``{}`` if the
    folder has none."""
    path = Path(out) / SPEC_COPY
    if not path.exists():
        return {}
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: bad TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SuiteError(f"{path}: cannot read ({e})") from None
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise SuiteError(f"{path}: {key}={raw[key]!r} must be a string")
    for section in ("fixed", "grid", "zip", "report"):
        if section in raw and not isinstance(raw[section], dict):
            raise SuiteError(f"{path}: {section}={raw[section]!r} must be a table "
                             f"([{section}] with its keys below it)")
    check_report_types(str(path), raw.get("report", {}))
    return raw


def spec_varied_keys(raw: dict[str, Any]) -> list[str]:
    """The keys a spec's ``[grid]`` and ``[zip]`` vary (nested tables as dotted keys)."""
    def walk(table: dict[str, Any], prefix: str) -> list[str]:
        keys: list[str] = []
        for k, v in table.items():
            keys += walk(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
        return keys

    return [*walk(raw.get("grid", {}), ""), *walk(raw.get("zip", {}), "")]


def check_report_keys(out: Path, raw: dict[str, Any], knobs: list[str]) -> None:
    """Every ``[report]`` key that names config keys (rows, cols, x, hue) names one the
    experiment varies: a misspelt ``hue`` would otherwise redraw the plot another way."""
    varied = list(dict.fromkeys([*spec_varied_keys(raw), *knobs]))
    check_named_keys(str(Path(out) / SPEC_COPY), raw.get("report", {}), varied)


def metric_names(columns: list[str]) -> list[str]:
    """The columns of a results frame that are metrics: what runs measured at their end
    (``eval/accuracy``, ``train/loss``, ...), the train-eval ``gap``, and the measured
    costs (``step_seconds``, ``mfu``, ...)."""
    found = [c for c in columns if c.startswith(SPLITS)]
    return [*found, "gap", *(c for c in NUMERIC_FIELDS if c in columns)]


def metric_checked(out: Path, frame: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """``frame``, once ``metric`` (``--metric``, else the spec's ``[report] metric``) is
    known to be one of its metrics, not a config key, a bookkeeping column or a typo."""
    where, columns = "--metric", list(frame.columns)
    if metric is None:
        metric = read_spec_copy(out).get("report", {}).get("metric")
        where = f"{Path(out) / SPEC_COPY}: [report] metric"
    known = metric_names(columns)
    if metric is None or metric in known:
        return frame
    what = ("a config key, not a metric" if metric == "seed"
            or metric.startswith(("model.", "data.", "train.")) else
            "a bookkeeping column, not a metric" if metric in columns else "not a metric")
    shown = [c for c in known if c.startswith(SPLITS)] + ["gap"]
    raise SuiteError(f"{where}={metric!r} is {what} of {out}{did_you_mean(metric, known)} "
                     f"(metrics: {', '.join(shown)}, or a measured cost such as step_seconds)")


def check_values(rows: list[dict[str, Any]], out: Path, from_csv: bool) -> None:
    """Every metric a run reports is a number (or missing), so means and tests can be
    taken; a results.csv's numbers, read as text where a column holds text, are made
    numbers again."""
    for row in rows:
        for key in [k for k in row if k.startswith(SPLITS) or k in NUMERIC_FIELDS]:
            value = row[key]
            if from_csv and isinstance(value, str):
                try:
                    row[key] = value = float(value)
                except ValueError:
                    pass
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
                continue
            where = (f"{Path(out) / 'results.csv'} (the row of {row.get('run_id')})" if from_csv
                     else f"{Path(out) / 'runs' / str(row.get('run_id')) / 'summary.json'}")
            key_text = key if from_csv or key in NUMERIC_FIELDS else f"metrics.{key}"
            raise SuiteError(f"{where}: {key_text}={value!r} is not a number")

