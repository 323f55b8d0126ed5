"""Paired comparisons and Holm's correction against scipy and a worked example."""

import math

import numpy as np
import pytest
from scipy import stats as sp_stats

from fedtransfer_jax.metrics.stats import holm, mean_ci, paired_comparison


def test_paired_comparison_matches_scipy_ttest_rel_and_the_t_interval():
    rng = np.random.default_rng(0)
    a = rng.normal(0.6, 0.05, 10)
    b = a - rng.normal(0.03, 0.02, 10)
    r = paired_comparison(a, b)
    ref = sp_stats.ttest_rel(a, b)
    assert r["n"] == 10
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    d = a - b
    half = sp_stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half), rel=1e-12)
    # The 95 % interval excludes 0 exactly when p < 0.05.
    assert (r["ci_low"] > 0) == (r["p"] < 0.05)


def test_degenerate_comparisons_say_nothing_rather_than_something():
    assert math.isnan(paired_comparison([0.5], [0.4])["p"])
    same = paired_comparison([0.5, 0.6], [0.4, 0.5])  # identical differences: no spread
    assert same["diff_mean"] == pytest.approx(0.1) and math.isnan(same["p"])
    with pytest.raises(ValueError, match="same seeds"):
        paired_comparison([0.1, 0.2], [0.1])


def test_holm_worked_example():
    # Sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06.
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": float("nan")})
    assert adj["d"] == pytest.approx(0.02) and adj["a"] == pytest.approx(0.03)
    assert adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert math.isnan(adj["e"])
    assert holm({"x": 0.9, "y": 0.8})["x"] == 1.0


def test_mean_ci_matches_scipy_t_interval():
    x = [0.61, 0.55, 0.70, 0.66, 0.58]
    out = mean_ci(x)
    lo, hi = sp_stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sp_stats.sem(x))
    assert out["n"] == 5 and out["mean"] == pytest.approx(np.mean(x))
    assert (out["ci_low"], out["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))
    one = mean_ci([0.4])
    assert one["mean"] == 0.4 and one["ci_low"] != one["ci_low"]  # one seed: no interval (NaN)
