"""Paired comparisons over seeds: the mean difference with its t-based 95 % confidence interval, the two-sided
paired t-test p-value, and Holm's step-down correction for a family of such tests.

Why paired: every method of a study runs on the same data and initial model for a given seed, so the seed's
own difficulty cancels in the per-seed difference; the comparison is a one-sample t-test of those
differences (``scipy.stats.ttest_rel``). Why Holm: a study compares one method against several baselines
and controls at once; Holm (1979) keeps the family-wise error rate at alpha without assuming independence
and is uniformly more powerful than Bonferroni.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sp_stats


def paired_comparison(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict:
    """``a - b`` paired over seeds: ``{"n", "diff_mean", "diff_se", "ci_low", "ci_high", "t", "p"}``.

    With fewer than 2 pairs, or no spread in the differences, the interval and p are NaN (not 0 or 1):
    nothing can be said, and the report must say so."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same seeds on both sides, got {a.shape} and {b.shape}")
    d = a - b
    n = int(d.size)
    mean = float(d.mean()) if n else float("nan")
    nan = float("nan")
    if n < 2:
        return {"n": n, "diff_mean": mean, "diff_se": nan, "ci_low": nan, "ci_high": nan, "t": nan, "p": nan}
    se = float(d.std(ddof=1) / math.sqrt(n))
    if se == 0.0:
        return {"n": n, "diff_mean": mean, "diff_se": 0.0, "ci_low": mean, "ci_high": mean, "t": nan, "p": nan}
    half = float(sp_stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    t = mean / se
    p = float(2.0 * sp_stats.t.sf(abs(t), n - 1))
    return {"n": n, "diff_mean": mean, "diff_se": se, "ci_low": mean - half, "ci_high": mean + half, "t": t, "p": p}


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean over seeds with its t-based confidence interval: ``{"n", "mean", "ci_low", "ci_high"}`` (a NaN
    interval with fewer than 2 values)."""
    v = np.asarray(values, np.float64)
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "ci_low": float("nan"), "ci_high": float("nan")}
    half = float(sp_stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(v.std(ddof=1)) / math.sqrt(n)
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half}


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values of a family of tests (NaN p-values are left out of the family and stay NaN):
    sorted ascending, p_(i) * (m - i + 1), made monotone, capped at 1."""
    named = sorted(((p, k) for k, p in pvalues.items() if p == p), key=lambda x: x[0])
    m = len(named)
    out = {k: float("nan") for k in pvalues}
    running = 0.0
    for i, (p, k) in enumerate(named):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


__all__ = ["holm", "mean_ci", "paired_comparison"]
