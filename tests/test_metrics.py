"""Tests for fedtransfer_jax.metrics on hand-built boundary and label maps.

Expected values are computed independently: by hand from the formulas, or by brute-force pair
counting / dictionary-based entropies rather than the contingency-table code under test.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections import Counter

import chex
import numpy as np
import pytest
from scipy import ndimage

from fedtransfer_jax import metrics
from fedtransfer_jax.metrics import (
    adjusted_rand_index,
    astm_grain_size_number,
    boundary_prf,
    grain_count,
    grain_count_rel_error,
    grain_size_summary,
    grain_table,
    grains_from_boundary,
    miou,
    postprocess_boundary,
    segmentation_metrics,
    summarize,
    variation_of_information,
    write_grain_table_csv,
)


# ----------------------------------------------------------------------------- helpers


def grid_boundary(h: int = 32, w: int = 32, rows=(16,), cols=(16,)) -> np.ndarray:
    """1-px boundary lines across the whole image at the given rows/columns."""
    b = np.zeros((h, w), dtype=bool)
    for r in rows:
        b[r, :] = True
    for c in cols:
        b[:, c] = True
    return b


def n_grains(boundary: np.ndarray) -> int:
    """Independent grain count: 4-connected components of the interior."""
    return ndimage.label(~boundary)[1]


def brute_force_ari(a: np.ndarray, b: np.ndarray) -> float:
    """ARI by counting all pixel pairs (Hubert & Arabie, pair-counting form)."""
    a, b = a.ravel(), b.ravel()
    n = a.size
    both = same_a = same_b = 0
    for i, j in itertools.combinations(range(n), 2):
        sa, sb = a[i] == a[j], b[i] == b[j]
        both += sa and sb
        same_a += sa
        same_b += sb
    pairs = n * (n - 1) / 2
    expected = same_a * same_b / pairs
    return (both - expected) / (0.5 * (same_a + same_b) - expected)


def brute_force_vi(a: np.ndarray, b: np.ndarray) -> float:
    """VI = H(A|B) + H(B|A) from Counter-based probabilities."""
    a, b = a.ravel().tolist(), b.ravel().tolist()
    n = len(a)
    joint = Counter(zip(a, b))
    ca, cb = Counter(a), Counter(b)
    h_a_given_b = -sum(c / n * math.log(c / cb[y]) for (x, y), c in joint.items())
    h_b_given_a = -sum(c / n * math.log(c / ca[x]) for (x, y), c in joint.items())
    return h_a_given_b + h_b_given_a


def voronoi_boundary(size: int, n_seeds: int, seed: int) -> np.ndarray:
    """A synthetic polycrystal: Voronoi cells of random seeds, 1-px boundaries where labels change."""
    rng = np.random.default_rng([seed, 0])
    seeds = np.zeros((size, size), dtype=np.int32)
    ys, xs = rng.integers(0, size, n_seeds), rng.integers(0, size, n_seeds)
    seeds[ys, xs] = np.arange(1, n_seeds + 1)
    idx = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    cells = seeds[idx[0], idx[1]]
    b = np.zeros_like(cells, dtype=bool)
    b[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    b[1:, :] |= cells[1:, :] != cells[:-1, :]
    return b


# ----------------------------------------------------------------------------- boundary F1 / mIoU


def test_perfect_prediction_scores_perfectly():
    gt = grid_boundary(rows=(8, 20), cols=(10, 25))
    m = segmentation_metrics(gt.copy(), gt)
    assert m["boundary_f1"] == 1.0
    assert m["boundary_precision"] == 1.0 and m["boundary_recall"] == 1.0
    assert m["miou"] == 1.0
    assert m["ari"] == pytest.approx(1.0, abs=1e-12)
    assert m["vi"] == pytest.approx(0.0, abs=1e-12)
    assert m["grain_count_rel_error"] == 0.0
    assert m["mean_grain_area_rel_error"] == 0.0
    assert m["n_grains_pred"] == m["n_grains_gt"] == 9.0


def test_missing_boundary_segment_merges_grains():
    gt = grid_boundary()  # 4 grains
    pred = gt.copy()
    pred[20:24, 16] = False  # gap in the lower half of the vertical line: two grains merge
    assert n_grains(gt) == 4 and n_grains(pred) == 3
    m = segmentation_metrics(pred, gt)
    assert m["ari"] < 0.99
    assert m["vi"] > 0.05
    assert m["grain_count_rel_error"] == pytest.approx(1 / 4)
    assert m["n_grains_pred"] == 3.0 and m["n_grains_gt"] == 4.0
    # mean area: 1024/3 vs 1024/4
    assert m["mean_grain_area_rel_error"] == pytest.approx((1024 / 3 - 256) / 256)
    # The gap costs pixel metrics little: precision stays perfect.
    assert m["boundary_precision"] == 1.0
    assert m["boundary_f1"] > 0.95


@pytest.mark.parametrize("shift", [1, 2])
def test_shift_within_tolerance_keeps_f1(shift):
    gt = grid_boundary(rows=(), cols=(12,))
    pred = grid_boundary(rows=(), cols=(12 + shift,))
    prf = boundary_prf(pred, gt, tolerance=2.0)
    assert prf == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # ... but the strict mIoU sees the shift.
    assert miou(pred, gt) < 1.0


def test_shift_beyond_tolerance_drops_f1():
    gt = grid_boundary(rows=(16,), cols=(12,))
    pred = grid_boundary(rows=(21,), cols=(17,))  # both lines shifted by 5 px
    prf = boundary_prf(pred, gt, tolerance=2.0)
    assert prf["f1"] < 0.5
    # Only pixels near the crossing points can match; count them independently.
    dist_to_gt = ndimage.distance_transform_edt(~gt)
    expected_p = np.mean(dist_to_gt[pred] <= 2.0)
    assert prf["precision"] == pytest.approx(expected_p)
    # With a 5-px tolerance everything matches again.
    assert boundary_prf(pred, gt, tolerance=5.0)["f1"] == 1.0


def test_boundary_prf_empty_cases():
    empty = np.zeros((8, 8), dtype=bool)
    line = grid_boundary(8, 8, rows=(), cols=(3,))
    assert boundary_prf(empty, empty) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert boundary_prf(empty, line)["f1"] == 0.0
    assert boundary_prf(empty, line)["recall"] == 0.0
    assert boundary_prf(line, empty)["f1"] == 0.0
    assert boundary_prf(line, empty)["precision"] == 0.0


def test_boundary_prf_accepts_uint8_and_rejects_bad_shapes():
    gt = grid_boundary(16, 16, rows=(5,), cols=(9,))
    assert boundary_prf(gt.astype(np.uint8) * 255, gt)["f1"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        boundary_prf(gt, gt[:8])
    with pytest.raises(ValueError, match="pred"):
        boundary_prf(gt[None], gt)


def test_miou_hand_computed():
    gt = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[1, 0, 1, 0]], dtype=bool)
    # boundary IoU = 1/3, interior IoU = 1/3 -> mean 1/3
    assert miou(pred, gt) == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- ARI / VI


def test_ari_vi_hand_computed_2x2_table():
    a = np.array([[0, 0, 1], [1, 0, 1]])
    b = np.array([[5, 5, 7], [9, 7, 9]])
    # Contingency table (rows a=0,1; cols b=5,7,9): [[2, 1, 0], [0, 1, 2]]; n = 6.
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    sum_ij = comb(2) + comb(1) + comb(1) + comb(2)  # 2
    sum_a = comb(3) + comb(3)  # 6
    sum_b = comb(2) * 3  # 3
    expected = sum_a * sum_b / comb(6)  # 1.2
    ari = (sum_ij - expected) / (0.5 * (sum_a + sum_b) - expected)
    assert ari == pytest.approx(0.8 / 3.3)
    # H(A|B) = ln2 / 3, H(B|A) = ln3 - 2 ln2 / 3.
    vi = math.log(3) - math.log(2) / 3
    assert adjusted_rand_index(a, b) == pytest.approx(ari, abs=1e-12)
    assert variation_of_information(a, b) == pytest.approx(vi, abs=1e-12)
    assert variation_of_information(b, a) == pytest.approx(vi, abs=1e-12)


def test_ari_zero_case_by_hand():
    # Table [[2, 0], [1, 1]]: sum_ij = 1 equals its expectation 2*3/6 = 1 -> ARI = 0.
    a = np.array([[0, 0], [1, 1]])
    b = np.array([[0, 0], [0, 1]])
    assert adjusted_rand_index(a, b) == pytest.approx(0.0, abs=1e-12)


def test_ari_vi_match_brute_force_and_ignore_label_values():
    rng = np.random.default_rng([7, 1])
    a = rng.integers(0, 4, size=(5, 6))
    b = rng.integers(0, 3, size=(5, 6))
    assert adjusted_rand_index(a, b) == pytest.approx(brute_force_ari(a, b), abs=1e-12)
    assert variation_of_information(a, b) == pytest.approx(brute_force_vi(a, b), abs=1e-12)
    # Relabelling (incl. negative / huge values -> the np.unique path) changes nothing.
    a_relabelled = np.array([-3, 10**9, 42, 7])[a]
    assert adjusted_rand_index(a_relabelled, b) == pytest.approx(adjusted_rand_index(a, b), abs=1e-12)
    assert variation_of_information(a_relabelled, b) == pytest.approx(
        variation_of_information(a, b), abs=1e-12
    )
    ari, vi = metrics.ari_and_vi(a, b)
    assert (ari, vi) == (adjusted_rand_index(a, b), variation_of_information(a, b))


def test_ari_vi_identical_and_trivial_partitions():
    x = np.arange(12).reshape(3, 4) % 3
    assert adjusted_rand_index(x, x + 5) == pytest.approx(1.0)
    assert variation_of_information(x, x + 5) == pytest.approx(0.0, abs=1e-12)
    one = np.zeros((3, 4), dtype=int)
    assert adjusted_rand_index(one, one) == 1.0
    # one cluster vs all singletons: no agreement beyond chance, VI = ln(12)
    single = np.arange(12).reshape(3, 4)
    assert adjusted_rand_index(one, single) == pytest.approx(0.0)
    assert variation_of_information(one, single) == pytest.approx(math.log(12))


# ----------------------------------------------------------------------------- grains


def test_grains_from_boundary_labels_and_coverage():
    b = grid_boundary(10, 10, rows=(4,), cols=(6,))
    lab = grains_from_boundary(b)
    chex.assert_shape(lab, (10, 10))
    assert lab.dtype == np.int32
    assert set(np.unique(lab)) == {1, 2, 3, 4}  # covers the image, labels 1..K
    # Boundary pixels take the nearest grain's label: row 4 pixel (4, 0) is 1 px from both
    # (3, 0) and (5, 0); interior pixels keep their own label.
    assert lab[0, 0] == lab[3, 5] and lab[0, 0] != lab[9, 9]
    unassigned = grains_from_boundary(b, assign_boundary=False)
    assert np.all(unassigned[b] == 0) and np.all(unassigned[~b] > 0)
    assert grain_count(unassigned) == 4


def test_grains_connectivity_diagonal_line():
    b = np.eye(8, dtype=bool)  # 1-px, 8-connected diagonal line
    assert grain_count(grains_from_boundary(b, connectivity=4)) == 2
    assert grain_count(grains_from_boundary(b, connectivity=8)) == 1
    with pytest.raises(ValueError, match="connectivity"):
        grains_from_boundary(b, connectivity=6)


def test_grains_min_area_merges_small_grain():
    b = grid_boundary(12, 12, rows=(), cols=(6,))
    b[1:4, 1:4] = True
    b[2, 2] = False  # a 1-px grain inside a ring
    assert grain_count(grains_from_boundary(b)) == 3
    lab = grains_from_boundary(b, min_area=4)
    assert grain_count(lab) == 2
    assert set(np.unique(lab)) == {1, 2}  # relabelled sequentially
    assert lab[2, 2] == lab[8, 2]  # the small grain went to its left-hand neighbour
    # all grains small -> the largest is kept
    assert grain_count(grains_from_boundary(b, min_area=10_000)) == 1
    assert np.all(grains_from_boundary(np.ones((4, 4), bool)) == 0)


def test_grain_count_rel_error():
    gt = np.array([[1, 1, 2, 2], [3, 3, 4, 4]])
    pred = np.array([[1, 1, 1, 1], [3, 3, 3, 3]])
    assert grain_count(gt) == 4 and grain_count(pred) == 2
    assert grain_count_rel_error(pred, gt) == pytest.approx(0.5)
    assert grain_count_rel_error(gt, gt) == 0.0


def _hand_label_map() -> np.ndarray:
    lab = np.ones((6, 6), dtype=np.int32)
    lab[0:3, 3:6] = 2
    lab[2:4, 2:4] = 5  # interior grain, overwrites (2, 3) from grain 2
    return lab  # areas: 1 -> 24, 2 -> 8, 5 -> 4


def test_grain_table_known_areas():
    rows = grain_table(_hand_label_map(), pixel_size_um=0.5)
    assert [r["grain_id"] for r in rows] == [1, 2, 5]
    assert [r["area_px"] for r in rows] == [24, 8, 4]
    assert [r["area_um2"] for r in rows] == pytest.approx([6.0, 2.0, 1.0])
    assert rows[2]["equivalent_diameter_px"] == pytest.approx(2 * math.sqrt(4 / math.pi))
    assert rows[2]["equivalent_diameter_um"] == pytest.approx(math.sqrt(4 / math.pi))
    inner = grain_table(_hand_label_map(), exclude_border=True)
    assert [r["grain_id"] for r in inner] == [5]
    assert inner[0]["area_um2"] is None and inner[0]["equivalent_diameter_um"] is None
    with pytest.raises(TypeError, match="integer"):
        grain_table(_hand_label_map().astype(float))
    with pytest.raises(ValueError, match="pixel_size_um"):
        grain_table(_hand_label_map(), pixel_size_um=-1.0)


def test_write_grain_table_csv_roundtrip(tmp_path):
    rows = grain_table(_hand_label_map())
    path = tmp_path / "grains.csv"
    write_grain_table_csv(rows, path)
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert [int(r["area_px"]) for r in back] == [24, 8, 4]
    assert back[0]["area_um2"] == ""  # None -> empty cell
    assert os.listdir(tmp_path) == ["grains.csv"]  # no temp file left behind
    with pytest.raises(ValueError, match="unknown columns"):
        write_grain_table_csv([{"grain_id": 1, "bogus": 2}], tmp_path / "bad.csv")
    assert sorted(os.listdir(tmp_path)) == ["grains.csv"]


def test_grain_table_csv_is_readable_by_the_group(tmp_path):
    old = os.umask(0o002)
    try:
        write_grain_table_csv(grain_table(_hand_label_map()), tmp_path / "g.csv")
    finally:
        os.umask(old)
    # mkstemp alone would give 0o600; an output must get what open() would give under the umask.
    assert os.stat(tmp_path / "g.csv").st_mode & 0o777 == 0o664


@pytest.mark.parametrize(
    "g, n_a_per_mm2",
    [(0.0, 7.75), (1.0, 15.50), (5.0, 248.0), (8.0, 1984.0)],  # ASTM E112 Table 4 (1x)
)
def test_astm_grain_size_number_known_values(g, n_a_per_mm2):
    mean_area_um2 = 1e6 / n_a_per_mm2
    assert astm_grain_size_number(mean_area_um2) == pytest.approx(g, abs=0.01)


def test_astm_halving_area_adds_one_and_rejects_bad_input():
    g = astm_grain_size_number(500.0)
    assert astm_grain_size_number(250.0) - g == pytest.approx(1.0, abs=1e-5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            astm_grain_size_number(bad)


def test_grain_size_summary_uses_jeffries_count():
    lab = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=np.int32)
    s = grain_size_summary(lab, pixel_size_um=10.0, check=False)  # field = 16 px * 100 um^2 = 1600 um^2
    assert s["n_grains"] == 4
    assert s["mean_area_px"] == 4.0 and s["mean_area_um2"] == pytest.approx(400.0)
    assert s["mean_equivalent_diameter_um"] == pytest.approx(10 * math.sqrt(16 / math.pi))
    assert s["n_grains_astm"] == 2.0  # all four grains touch the edge: each counts one half
    assert s["astm_G"] == pytest.approx(3.321928 * math.log10(2 / 1600e-6) - 2.954)
    bare = grain_size_summary(lab, check=False)
    assert bare["astm_G"] is None and bare["mean_area_um2"] is None and bare["mean_area_px"] == 4.0
    assert grain_size_summary(np.zeros((3, 3), np.int32))["n_grains"] == 0


# ----------------------------------------------------------------------------- postprocess


def test_postprocess_closes_one_px_gap():
    b = grid_boundary(20, 20, rows=(10,), cols=())
    b[10, 7] = False
    assert n_grains(b) == 1
    closed = postprocess_boundary(b, close_radius=1)
    assert closed[10, 7]
    assert n_grains(closed) == 2
    # line ends at the image border survive the closing
    assert closed[10, 0] and closed[10, 19]
    # with the step off the gap stays
    assert not postprocess_boundary(b, close_radius=0)[10, 7]


def test_postprocess_removes_small_isolated_fragment():
    b = grid_boundary(24, 24, rows=(), cols=(12,))
    b[4:6, 4:6] = True  # 4-px speck inside the left grain
    b[15:20, 15:20] = True
    b[16:19, 16:19] = False  # 16-px ring enclosing a 9-px grain: separates grains, kept
    out = postprocess_boundary(b, close_radius=0, min_fragment_px=20)
    assert not out[4:6, 4:6].any()
    assert out[:, 12].all()
    assert out[15, 15:20].all()  # the ring survives (it encloses a grain)
    assert n_grains(out) == n_grains(b) == 3
    np.testing.assert_array_equal(out, b & ~_square(24, 4, 6))  # only the speck changed


def _square(size: int, lo: int, hi: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[lo:hi, lo:hi] = True
    return m


def test_postprocess_merges_small_grain():
    b = grid_boundary(24, 24, rows=(), cols=(12,))
    b[15:20, 15:20] = True
    b[16:19, 16:19] = False  # 9-px grain
    out = postprocess_boundary(b, close_radius=0, min_grain_area=10)
    assert n_grains(out) == 2
    assert not out[15:20, 15:20].any()  # the ring is gone entirely (far from the main line)
    assert out[:, 12].all()


def test_postprocess_fills_pocket_inside_thick_boundary():
    b = grid_boundary(16, 16, rows=(), cols=(7,))
    b[:, 6:9] = True  # 3-px band between two large grains
    b[5, 7] = False  # a 1-px hole in the band: a spurious third "grain" that cannot merge
    assert n_grains(b) == 3
    out = postprocess_boundary(b, close_radius=0, min_grain_area=5)
    assert n_grains(out) == 2
    np.testing.assert_array_equal(out, b | (np.arange(16)[:, None] == 5) & (np.arange(16) == 7))


def test_postprocess_thin_keeps_grid_topology():
    b = grid_boundary(24, 24, rows=(11,), cols=(11,))
    b = ndimage.binary_dilation(b)  # 3-px lines crossing, touching all four edges
    thin = postprocess_boundary(b, close_radius=0, thin=True)
    assert n_grains(thin) == n_grains(b) == 4
    assert thin[0].any() and thin[-1].any() and thin[:, 0].any() and thin[:, -1].any()


def test_postprocess_thin_and_dilate():
    b = grid_boundary(20, 20, rows=(), cols=(9,))
    b[:, 8:11] = True  # 3-px thick line
    thin = postprocess_boundary(b, close_radius=0, thin=True)
    assert thin.sum(axis=1).max() == 1 and thin[2:-2].sum(axis=1).min() == 1
    assert n_grains(thin) == 2
    wide = postprocess_boundary(b, close_radius=0, thin=True, dilate_to=3)
    assert (wide[2:-2].sum(axis=1) == 3).all()
    with pytest.raises(ValueError, match="close_radius"):
        postprocess_boundary(b, close_radius=-1)


# ----------------------------------------------------------------------------- API plumbing


def test_segmentation_metrics_keys_types_and_json():
    gt = voronoi_boundary(64, 12, seed=0)
    pred = voronoi_boundary(64, 12, seed=1)
    m = segmentation_metrics(pred, gt)
    expected_keys = {
        "boundary_f1", "boundary_precision", "boundary_recall", "miou", "ari", "vi",
        "grain_count_rel_error", "n_grains_pred", "n_grains_gt", "mean_grain_area_rel_error",
    }
    assert expected_keys <= set(m)
    assert all(type(v) is float for v in m.values())
    json.dumps(m)
    assert 0.0 <= m["ari"] < 1.0 and m["vi"] > 0.0
    assert m["n_grains_gt"] == n_grains(gt)
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(pred, gt[:32])


def test_summarize_mean_and_std():
    per_example = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}, {"a": 5.0, "b": 8.0}]
    s = summarize(per_example)
    assert s["a"] == pytest.approx(3.0) and s["a_std"] == pytest.approx(np.std([1, 3, 5]))
    assert s["b"] == pytest.approx(4.0) and s["b_std"] == pytest.approx(np.std([2, 2, 8]))
    assert summarize([]) == {}
    with pytest.raises(KeyError, match="example 1"):
        summarize([{"a": 1.0}, {"b": 2.0}])
