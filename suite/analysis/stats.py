"""Telling an effect from seed noise: t intervals of a mean over seeds, and tests of one
cell against another (paired over the seeds both ran, Welch's otherwise).

Seeds are the replicates: a cell's runs differ in nothing but the seed, so its spread
is the seed noise, and two cells that ran the same seeds pair on them (the seed fixes
the initialisation and the data order for both). p-values are two-sided and not
corrected for comparing many cells with one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
ALPHA = 1 - LEVEL


def t_interval(values, level: float = LEVEL) -> tuple[float, float]:
    """The ``level`` t interval of the mean of ``values`` (a point where n < 2)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (math.nan, math.nan)
    mean = float(x.mean())
    if len(x) < 2:
        return (mean, mean)
    half = float(sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return (mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One cell against another: mean difference, its p-value and the test used."""

    delta: float  # mean(a) - mean(b)
    p: float  # nan when n < 2
    test: str  # "paired t", "Welch t", "n < 2" or "same cell"
    n: int  # seeds paired, or the smaller cell's runs

    @property
    def tied(self) -> bool | None:
        """No difference at ``ALPHA``; None when there are too few seeds to say."""
        if self.test == "same cell":
            return True
        return None if math.isnan(self.p) else self.p >= ALPHA


def compare(a: dict[int, float], b: dict[int, float]) -> Comparison:
    """Cell ``a`` against cell ``b``, each ``{seed: metric}`` of its completed runs.

    Paired t-test when both ran the same seeds (2 or more), Welch's t-test otherwise.
    Differences that are the same on every seed (zero spread) are decided exactly: p = 1
    when they are all zero, 0 otherwise.
    """
    a = {s: v for s, v in a.items() if math.isfinite(v)}
    b = {s: v for s, v in b.items() if math.isfinite(v)}
    if not a or not b:
        return Comparison(math.nan, math.nan, "n < 2", min(len(a), len(b)))
    delta = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if set(a) == set(b) and len(a) >= 2:
        d = np.array([a[s] - b[s] for s in sorted(a)])
        if np.allclose(d, d[0], rtol=0, atol=1e-12):
            return Comparison(delta, 1.0 if abs(d[0]) <= 1e-12 else 0.0, "paired t", len(d))
        return Comparison(delta, float(sps.ttest_rel([a[s] for s in sorted(a)],
                                                     [b[s] for s in sorted(a)]).pvalue),
                          "paired t", len(d))
    if len(a) < 2 or len(b) < 2:
        return Comparison(delta, math.nan, "n < 2", min(len(a), len(b)))
    xa, xb = np.array(list(a.values())), np.array(list(b.values()))
    if xa.std() == 0 and xb.std() == 0:
        return Comparison(delta, 1.0 if delta == 0 else 0.0, "Welch t", min(len(a), len(b)))
    return Comparison(delta, float(sps.ttest_ind(xa, xb, equal_var=False).pvalue), "Welch t",
                      min(len(a), len(b)))


def tied_text(c: Comparison) -> str:
    """``tied_with_best`` as the table writes it: true, false, or n < 2."""
    tied = c.tied
    return "n < 2" if tied is None else str(tied).lower()
