"""Property inference (privacy/audit/property_inference.py): grain counts, the ridge operator, signal vs noise."""

import numpy as np
import pytest

from fedtransfer_jax.privacy import audit


def test_grain_structure_counts_four_connected_grains():
    label = np.zeros((8, 8), np.uint8)
    label[3, :] = 1  # a horizontal and a vertical boundary line: 4 grains
    label[:, 5] = 1
    s = audit.grain_structure(label)
    assert s["n_grains"] == 4
    assert s["boundary_fraction"] == pytest.approx(15 / 64)
    assert s["mean_grain_area"] == pytest.approx(49 / 4)


def test_property_inference_finds_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n, d = 30, 40
    y = rng.normal(size=n)
    linear = np.outer(y, rng.normal(size=d)) + 0.01 * rng.normal(size=(n, d))  # features = f(target)
    hit = audit.property_inference(linear, {"y": y}, permutations=100)["y"]
    assert hit["r2"] > 0.95 and hit["p_value"] < 0.02 and hit["leaks"]
    # Features independent of the target: by design 5% of draws 'leak' at p < 0.05, so look at several.
    misses = [
        audit.property_inference(rng.normal(size=(n, d)), {"y": y}, permutations=100)["y"] for _ in range(5)
    ]
    assert np.median([m["r2"] for m in misses]) < 0.0 and np.median([m["p_value"] for m in misses]) > 0.2
    assert sum(m["leaks"] for m in misses) <= 1


def test_loo_ridge_operator_is_the_explicit_leave_one_out_fit():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 6)), rng.normal(size=10)
    op = audit.loo_ridge_operator(x, alpha=0.5)
    for i in (0, 7):
        train = np.delete(np.arange(10), i)
        mu, sd = x[train].mean(0), x[train].std(0)
        z = (x[train] - mu) / sd
        w = np.linalg.solve(z.T @ z + 0.5 * 6 * np.eye(6), z.T @ (y[train] - y[train].mean()))
        assert op[i] @ y == pytest.approx(y[train].mean() + ((x[i] - mu) / sd) @ w)
        assert op[i, i] == 0.0  # the held-out tile's own target is never used
