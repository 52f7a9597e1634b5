"""A spec's ``[report]`` table, checked: its keys, their types, and that the config keys
it names (rows, cols, x, hue) are ones the grid varies.

``run`` checks them when it loads the spec, before anything trains, and ``report`` checks
a results folder's ``spec.toml`` copy the same way: a misspelt ``hue`` or ``rows = 5``
is one line naming the file, the key and the value (with the nearest varied key), not a
report that fails, or quietly draws another plot, after the grid has trained.
"""

from __future__ import annotations

from typing import Any

from suite.config.overrides import did_you_mean
from suite.errors import SpecError

REPORT_KEYS = ("rows", "cols", "metric", "x", "hue", "title", "reference")
LIST_KEYS = ("rows", "cols")  # [report] keys that take a list of varied keys
ONE_KEYS = ("x", "hue")  # [report] keys that take one varied key
TABLE_KEYS = ("reference",)  # [report] keys that take a table {varied key: value}


def check_report_types(where: str, report: Any) -> None:
    """``[report]`` is a table of known keys, each holding the type it takes."""
    if not isinstance(report, dict):
        raise SpecError(f"{where}: report={report!r} must be a table ([report] with its keys "
                        "below it)")
    for key, value in report.items():
        if key not in REPORT_KEYS:
            raise SpecError(f"{where}: [report] unknown key {key!r}"
                            f"{did_you_mean(key, REPORT_KEYS)} (allowed: "
                            f"{', '.join(sorted(REPORT_KEYS))})")
        if key in LIST_KEYS and not (isinstance(value, list)
                                     and all(isinstance(v, str) for v in value)):
            raise SpecError(f"{where}: [report] {key}={value!r} must be a list of varied "
                            f'keys, e.g. {key} = ["model.num_latents"]')
        if key in TABLE_KEYS:
            if not (isinstance(value, dict) and value and all(
                    isinstance(v, str | int | float | bool) for v in value.values())):
                raise SpecError(f"{where}: [report] {key}={value!r} must be a table of varied "
                                f'keys and values, e.g. {key} = {{"data.permutation" = "none"}}')
            continue
        if key not in LIST_KEYS and not isinstance(value, str):
            example = "eval/accuracy" if key == "metric" else (
                "model.num_latents" if key in ONE_KEYS else "Latents")
            raise SpecError(f'{where}: [report] {key}={value!r} must be one string, e.g. '
                            f'{key} = "{example}"')


def check_report_keys(where: str, report: dict[str, Any], varied: list[str]) -> None:
    """Every ``[report]`` key that names config keys names one of ``varied``: a misspelt
    ``hue`` would otherwise redraw the plot another way."""
    for name, value in report.items():
        if name not in (*LIST_KEYS, *ONE_KEYS, *TABLE_KEYS):
            continue
        for key in value if isinstance(value, list | dict) else [value]:
            if key not in varied:
                raise SpecError(
                    f"{where}: [report] {name}={key!r} is not a varied key"
                    f"{did_you_mean(key, varied)} (varied: {', '.join(varied) or 'none'})")
