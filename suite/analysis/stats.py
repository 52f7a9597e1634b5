"""Telling an effect from seed noise: t intervals of a mean over seeds, exact permutation
tests of one cell against another, and Holm's correction over the cells of one table.

Seeds are the replicates: a cell's runs differ in nothing but the seed, so its spread
is the seed noise, and two cells that ran the same seeds pair on them (the seed fixes
the initialisation and the data order for both).

Why permutation tests and not t tests. A table has 2 to 5 seeds a cell and its metric is
discrete (an accuracy moves in steps of one eval example). A t test's p-value rests on a
normal sampling distribution and a variance estimated from those few values: with 3 seeds
one more correct example on every seed has zero spread, so t is infinite and p = 0
("moved"), while a larger but noisier shift gets p = 0.06. Neither is a valid p-value, and
a t test wherever the differences vary would still call one or two more correct examples
on each of 3 seeds "moved" (p = 0.04). The exact tests here need only that, where two
cells do not differ, their per-seed differences are as likely negative as positive
(paired) or their runs are exchangeable (unpaired); their p-value is the share of the 2^n
sign flips (or of the relabellings) whose mean difference is at least as far from 0 as the
one observed. The price is honest: the smallest p n paired seeds can give is 2 / 2^n (0.25
with 3 seeds, 0.0625 with 5, 0.031 with 6), so a table of few seeds cannot decide anything
at 5%, and says so (:func:`undecidable`) instead of guessing.

A table tests many cells against one; :func:`decide` corrects for that with Holm's
step-down method over the cells tested (the family), which keeps the chance that any
cell is called different, where none differs, at ``ALPHA`` or below against a reference
fixed before looking (``compare``'s old folder, ``report --reference``). The best cell
is chosen from the same runs, so against it the rate is higher (identical cells,
simulated: about 5% at 5 cells, 9 to 13% at 10): "not tied with the best" is a screen.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
ALPHA = 0.05
EXACT_LIMIT = 2**16  # enumerate up to this many sign flips or relabellings, else sample
RESAMPLES = 2**16  # random sign flips or relabellings beyond it (a fixed generator)
PAIRED, UNPAIRED, FEW, SAME = "sign-flip (paired)", "permutation (unpaired)", "n < 2", \
    "same cell"
UNMATCHED = "no reference cell"  # a per-row reference left this cell without a partner
TESTS = (PAIRED, UNPAIRED)  # what a comparison that is a test says it used


def t_interval(values, level: float = LEVEL,
               bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """The ``level`` t interval of the mean of ``values``; (nan, nan) where n < 2: one
    seed says nothing about the seed noise, so no interval (not a zero-width one).
    ``bounds``: the range the metric cannot leave (an accuracy's [0, 1]); the interval
    is clipped to it, since a few spread-out seeds give a t interval past it."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    half = float(sps.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    if bounds is not None:
        return (max(bounds[0], mean - half), min(bounds[1], mean + half))
    return (mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One cell against another: mean difference, its raw p-value and the test used."""

    delta: float  # mean(a) - mean(b)
    p: float  # two-sided, not corrected; nan when n < 2
    test: str  # PAIRED, UNPAIRED, FEW or SAME
    n: int  # seeds paired, or the smaller cell's runs
    p_min: float = math.nan  # the smallest p this test can give with these seeds


def compare(a: dict[int, float], b: dict[int, float]) -> Comparison:
    """Cell ``a`` against cell ``b``, each ``{seed: metric}`` of its completed runs.

    Exact sign-flip test of the per-seed differences when both ran the same seeds (2 or
    more), exact permutation test of the runs' cell labels otherwise; both two-sided with
    the mean difference as statistic.
    """
    a = {s: v for s, v in a.items() if math.isfinite(v)}
    b = {s: v for s, v in b.items() if math.isfinite(v)}
    if not a or not b:
        return Comparison(math.nan, math.nan, FEW, min(len(a), len(b)))
    delta = float(np.mean(list(a.values())) - np.mean(list(b.values())))
    if set(a) == set(b) and len(a) >= 2:
        d = np.array([a[s] - b[s] for s in sorted(a)])
        p, p_min = sign_flip(d)
        return Comparison(delta, p, PAIRED, len(d), p_min)
    if len(a) < 2 or len(b) < 2:
        return Comparison(delta, math.nan, FEW, min(len(a), len(b)))
    p, p_min = relabel(np.array(list(a.values())), np.array(list(b.values())))
    return Comparison(delta, p, UNPAIRED, min(len(a), len(b)), p_min)


def sign_flip(d: np.ndarray) -> tuple[float, float]:
    """(p, smallest attainable p) of the paired differences ``d``: the share of sign
    flips whose |sum| is at least the observed one (all 2^n of them up to 16 pairs)."""
    n = len(d)
    if 2**n <= EXACT_LIMIT:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        return _share(np.abs(signs @ d), abs(d.sum()), np.abs(d).sum()), 2.0 / 2**n
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(RESAMPLES, n))
    return _sampled(np.abs(signs @ d), abs(d.sum()), np.abs(d).sum())


def relabel(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(p, smallest attainable p) of two unpaired groups: the share of the ways to split
    their pooled runs into groups of these sizes whose |mean difference| is at least the
    observed one (every split up to :data:`EXACT_LIMIT`, a random sample beyond)."""
    pooled, na = np.concatenate([a, b]), len(a)
    total, scale = pooled.sum(), np.abs(pooled).sum()
    observed = abs(a.mean() - b.mean())

    def spread(first: np.ndarray) -> np.ndarray:  # |mean(group a) - mean(group b)|
        s = pooled[first].sum(axis=1)
        return np.abs(s / na - (total - s) / len(b))

    splits = math.comb(len(pooled), na)
    if splits <= EXACT_LIMIT:
        first = np.array(list(itertools.combinations(range(len(pooled)), na)))
        return _share(spread(first), observed, scale), (2.0 if na == len(b) else 1.0) / splits
    rng = np.random.default_rng(0)
    first = np.argsort(rng.random((RESAMPLES, len(pooled))), axis=1)[:, :na]
    return _sampled(spread(first), observed, scale)


def _share(null: np.ndarray, observed: float, scale: float) -> float:
    """Share of ``null`` at or beyond ``observed``, ties within rounding counted as ties."""
    return float(np.mean(null >= observed - 1e-9 * max(scale, 1e-300)))


def _sampled(null: np.ndarray, observed: float, scale: float) -> tuple[float, float]:
    """A sampled null: (1 + hits) / (1 + draws), which stays a valid p-value."""
    hits = np.sum(null >= observed - 1e-9 * max(scale, 1e-300))
    return float((1 + hits) / (1 + len(null))), 1.0 / (1 + len(null))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values: the i-th smallest of k finite p times (k - i + 1), kept
    monotone and at most 1; nan stays nan and does not count in k."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    k = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (k - np.arange(k))))
    out[order] = adjusted
    return out


def tested(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons of a family that are tests (not the cell itself, not n < 2)."""
    return [c for c in comparisons if c.test in TESTS]


def decide(comparisons: Sequence[Comparison]) -> tuple[np.ndarray, list[bool | None]]:
    """Holm-adjusted p of each comparison over the family of those tested, and whether
    each differs at ``ALPHA`` by that p: None for n < 2, False for the cell itself."""
    raw = [c.p if c.test != SAME else math.nan for c in comparisons]
    adjusted = holm(raw)
    adjusted[[i for i, c in enumerate(comparisons) if c.test == SAME]] = 1.0
    verdicts: list[bool | None] = [
        False if c.test == SAME else None if math.isnan(q) else bool(q < ALPHA)
        for c, q in zip(comparisons, adjusted, strict=True)]
    return adjusted, verdicts


def tied_text(differs: bool | None) -> str:
    """``tied_with_best`` as the table writes it: true, false, or n < 2."""
    return "n < 2" if differs is None else str(not differs).lower()


def seeds_needed(k: int) -> int:
    """Paired seeds whose smallest p, Holm-adjusted over ``k`` tests, is below ``ALPHA``."""
    return math.floor(math.log2(2 * max(k, 1) / ALPHA)) + 1


def undecidable(comparisons: Sequence[Comparison], what: str = "cells") -> str:
    """A sentence when these seeds cannot decide any comparison of the family at
    ``ALPHA`` after Holm's correction, however large the effect; "" when they can."""
    family = tested(comparisons)
    if not family:
        return ""
    k = len(family)
    strongest = min(family, key=lambda c: c.p_min)
    if strongest.p_min * k < ALPHA:
        return ""
    seeds = "paired seeds" if strongest.test == PAIRED else \
        "seeds in the smaller cell (unpaired)"
    holm_text = f" ({min(1.0, strongest.p_min * k):.3g} Holm-adjusted over {k} {what})" \
        if k > 1 else ""
    return (f"with {strongest.n} {seeds} the smallest attainable p is "
            f"{strongest.p_min:.3g}{holm_text}: no cell can be decided at {ALPHA:.0%}, "
            f"however large its difference; {seeds_needed(k)} paired seeds are the fewest "
            "that can: run more seeds")
