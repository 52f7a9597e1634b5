"""A table's cells against its best cell (or a named reference): the ``table.csv`` columns
that say so, and the words that say which p decides.

Every cell is tested against one, so the cells tested are one family: a cell is tied
with the best unless its p, Holm-adjusted over that family, is below ``stats.ALPHA``.
``p_vs_*`` keeps the raw p beside ``p_vs_*_holm``, the one that decides.
"""

from __future__ import annotations

import math

import pandas as pd

from suite.analysis import stats
from suite.analysis.tables import (
    ReportSpec,
    best_row,
    bounds_of,
    holm_header,
    per_row_reference,
    reference_rows,
    seeds_of,
)


def significance(agg: pd.DataFrame, frame: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """``ci95_low``, ``ci95_high`` of the metric's mean (nan for one seed), and against the
    best cell (or ``spec.reference``): ``delta_vs_*``, ``p_vs_*`` (raw), ``p_vs_*_holm``
    (Holm-adjusted over the cells tested: the p that decides), ``p_min_vs_*`` (the smallest
    p those seeds can give), ``n_vs_*`` (the seeds paired, or the smaller cell's runs),
    ``test_vs_*`` and ``tied_with_*``."""
    m, versus = spec.metric, spec.versus
    cells = seeds_of(frame, spec.knobs, m)
    agg = agg.copy()
    bounds = bounds_of(m)
    raw = [stats.t_interval(list(c.values())) for c in cells]
    intervals = [stats.t_interval(list(c.values()), bounds=bounds) for c in cells]
    agg["ci95_low"] = [lo for lo, _ in intervals]
    agg["ci95_high"] = [hi for _, hi in intervals]
    if bounds is not None:  # which intervals the metric's range cut (table notes say so)
        agg["ci95_clipped"] = [a != b for a, b in zip(raw, intervals, strict=True)]
    target = reference_rows(agg, spec) if spec.reference else best_row(agg, spec)
    agg = _against(agg, cells, target, versus)
    if isinstance(target, list) and per_row_reference(spec, target):  # table.csv says which
        agg["reference_cell"] = ["" if t is None else cell_text(agg, t, spec) for t in target]
    if spec.reference:  # the best cell is still what the tables bold
        agg = _against(agg, cells, best_row(agg, spec), "best")
    return agg


def against(cells: list[dict[int, float]],
            target: int | None | list[int | None]) -> list[stats.Comparison]:
    """Every cell against cell ``target`` (``{seed: metric}`` each), or each against its
    own entry of a list of targets."""
    if isinstance(target, list):  # per-row references: None is a cell without a partner
        targets, missing = target, stats.UNMATCHED
    else:
        targets, missing = [target] * len(cells), stats.FEW
    return [stats.Comparison(math.nan, math.nan, missing, 0) if t is None else
            stats.Comparison(0.0, 1.0, stats.SAME, len(c)) if i == t else
            stats.compare(c, cells[t]) for i, (c, t) in enumerate(zip(cells, targets,
                                                                       strict=True))]


def _against(agg: pd.DataFrame, cells: list[dict[int, float]],
             target: int | None | list[int | None],
             versus: str) -> pd.DataFrame:
    comparisons = against(cells, target)
    adjusted, differs = stats.decide(comparisons)
    agg[f"delta_vs_{versus}"] = [c.delta for c in comparisons]
    agg[f"p_vs_{versus}"] = [c.p for c in comparisons]
    agg[f"p_vs_{versus}_holm"] = adjusted
    agg[f"p_min_vs_{versus}"] = [c.p_min for c in comparisons]
    agg[f"n_vs_{versus}"] = [c.n for c in comparisons]
    agg[f"test_vs_{versus}"] = [c.test for c in comparisons]
    agg[f"tied_with_{versus}"] = [stats.tied_text(d) for d in differs]
    return agg


def family(agg: pd.DataFrame, versus: str) -> list[stats.Comparison]:
    """The comparisons a significance table made, read back from its columns."""
    rows = len(agg)
    column = {name: list(agg[f"{name}_vs_{versus}"]) if f"{name}_vs_{versus}" in agg
              else [math.nan] * rows for name in ("delta", "p", "p_min", "n")}
    tests = list(agg[f"test_vs_{versus}"]) if f"test_vs_{versus}" in agg else \
        [stats.FEW] * rows
    return [stats.Comparison(d, p, t, 0 if math.isnan(n) else int(n), q)
            for d, p, t, n, q in zip(column["delta"], column["p"], tests, column["n"],
                                     column["p_min"], strict=True)]


def significance_notes(spec: ReportSpec, agg: pd.DataFrame) -> list[str]:
    """What ``p vs *``, its Holm column and the bold say, in words, with the k they use."""
    v = spec.versus
    named = ", ".join(f"{k}={val}" for k, val in (spec.reference or {}).items())
    target = "the best cell" if v == "best" else (
        f"its own reference cell ({named}, the same other keys)"
        if "reference_cell" in agg else f"the reference cell {named}")
    comparisons = family(agg, v)
    k = len(stats.tested(comparisons))
    tests = list(dict.fromkeys(c.test for c in stats.tested(comparisons)))
    described = {stats.PAIRED: "the 2^n sign flips of the per-seed differences over the n "
                 "seeds both cells ran", stats.UNPAIRED: "where the two cells' seeds differ, "
                 "every split of their pooled runs into groups of their sizes"}
    bold_k = k if v == "best" else len(stats.tested(family(agg, "best")))
    lines = [
        f"p vs {v}: two-sided exact permutation test of each cell against {target}"
        + (" (" + "; ".join(f"{t}: {described[t]}" for t in tests) + ")" if tests else
           ": none possible")
        + "; 'n < 2': too few seeds to test"
        + ("; 'no ref.': no cell has the reference's values and this cell's other keys"
           if any(c.test == stats.UNMATCHED for c in comparisons) else "")
        + ". Not a t test: a few seeds of a discrete metric give a t test no valid p-value.",
        f"{holm_header(v, k)}: p vs {v} Holm-adjusted over the {_cells(k)} tested against "
        f"{target} (p_vs_{v}_holm in table.csv); this p decides, not the raw one." if k else
        f"{holm_header(v, k)}: no cell could be tested.",
        "**Bold**: the best cell and every cell tied with it (p vs best Holm-adjusted over "
        f"{_cells(bold_k)} >= {stats.ALPHA:g}): these cannot be told apart from seed noise."]
    if limit := stats.undecidable(comparisons):
        lines.append(limit[0].upper() + limit[1:] + ".")
    if "ci95_clipped" in agg and agg["ci95_clipped"].any():
        cells = ", ".join(cell_text(agg, i, spec) for i in agg.index[agg["ci95_clipped"]])
        lines.append(f"95% CI clipped to [0, 1] (an accuracy cannot leave it; the t interval "
                     f"of a few spread-out seeds does): {cells}.")
    return lines


def cell_text(agg: pd.DataFrame, i: int, spec: ReportSpec) -> str:
    """``model.mlp=gated, model.gated.scale=0.5``: the cell of ``agg``'s row ``i``."""
    return ", ".join(f"{k}={agg.at[i, k]}" for k in spec.knobs if k in agg) or "the cell"


def _cells(k: int) -> str:
    return f"{k} cell" + ("" if k == 1 else "s")
