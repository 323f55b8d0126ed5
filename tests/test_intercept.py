"""Heyn's mean lineal intercept (metrics/intercept.py) against closed forms, a naive reference, ASTM E112's
table, and its use in grain_size_summary and `evaluate --group_regex`."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from fedtransfer_jax.metrics import grains, intercept

from test_classical import evaluate, write_folder


def square_grid(n_cells: int, a: int, width: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels, boundary) of n_cells x n_cells squares of side a, offset by a/2 so a test line starts inside
    a grain, as a randomly placed line does; boundary lines `width` px wide (0: none)."""
    y, x = np.mgrid[0 : n_cells * a, 0 : n_cells * a]
    labels = ((y + a // 2) // a) * (n_cells + 1) + (x + a // 2) // a + 1
    boundary = ((y + a // 2) % a < width) | ((x + a // 2) % a < width)
    return labels.astype(np.int32), boundary


def naive_crossings(labels: np.ndarray, spacing: int = 1) -> int:
    """Walk every test line pixel by pixel, remembering the last grain seen (the definition, written out)."""
    total = 0
    for line in [*labels[::spacing], *labels[:, ::spacing].T]:
        last = 0
        for v in line:
            if v:
                total += int(last != 0 and v != last)
                last = v
    return total


def test_square_grid_intercept_is_the_side_whatever_the_boundary_width():
    labels, _ = square_grid(8, 16)
    assert intercept.count_intercepts(labels).mean_px == 16.0
    for width in (1, 3, 5):  # a 5 px line must not blank the test lines lying inside it
        _, boundary = square_grid(8, 16, width)
        assert intercept.count_intercepts(grains.grains_from_boundary(boundary)).mean_px == 16.0, width


def test_poisson_voronoi_matches_the_stereological_closed_form():
    # Isotropic random tessellation of point density lam: P_L = (2 / pi) L_A with L_A = 2 sqrt(lam), so the
    # mean intercept is pi / (4 sqrt(lam)) (Stoyan, Kendall & Mecke). Seeds fill a margin around the field so
    # its edge cells are not enlarged; three fields pooled.
    lam, h, margin = 1 / 700.0, 384, 64
    parts = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        pts = rng.uniform(-margin, h + margin, (rng.poisson(lam * (h + 2 * margin) ** 2), 2))
        y, x = np.mgrid[0:h, 0:h]
        labels = cKDTree(pts).query(np.stack([y.ravel(), x.ravel()], 1))[1].reshape(h, h) + 1
        parts.append(intercept.count_intercepts(labels.astype(np.int32)))
    expected = math.pi / (4 * math.sqrt(lam))
    assert intercept.pooled(parts).mean_px == pytest.approx(expected, rel=0.04)


@pytest.mark.parametrize("spacing", [1, 3])
def test_matches_a_naive_walk_with_unlabelled_pixels(spacing):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, (23, 31)).astype(np.int32)  # 0 = unlabelled, skipped along a line
    labels[5] = 0  # a line with no grain at all
    got = intercept.count_intercepts(labels, spacing=spacing)
    assert got.crossings == naive_crossings(labels, spacing)
    rows, cols = len(range(0, 23, spacing)), len(range(0, 31, spacing))
    assert got.line_px == rows * 31 + cols * 23


def test_pooling_crops_sums_lines_and_crossings():
    labels, _ = square_grid(8, 16)
    crops = [labels[:64], labels[64:]]
    whole_rows = intercept.count_intercepts(labels)
    pooled = intercept.pooled(intercept.count_intercepts(c) for c in crops)
    assert pooled.line_px == whole_rows.line_px
    assert pooled.crossings == naive_crossings(crops[0]) + naive_crossings(crops[1])
    assert intercept.count_intercepts(np.ones((8, 8), np.int32)).mean_px is None  # one grain: no size


def test_astm_g_from_intercept_follows_e112_table():
    # ASTM E112, mean lineal intercept (mm) per grain size number.
    for g, l_mm in ((0, 0.320), (1, 0.226), (5, 0.0566), (8, 0.0200), (10, 0.0100)):
        assert intercept.astm_grain_size_from_intercept(l_mm * 1e3) == pytest.approx(g, abs=0.01)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="mean_intercept_um"):
            intercept.astm_grain_size_from_intercept(bad)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="integer"):
        intercept.count_intercepts(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="spacing"):
        intercept.count_intercepts(np.zeros((4, 4), np.int32), spacing=0)


def test_grain_size_summary_reports_the_intercept_and_its_g():
    _, boundary = square_grid(8, 16, 2)
    labels = grains.grains_from_boundary(boundary)
    s = grains.grain_size_summary(labels, pixel_size_um=2.0, boundary=boundary)
    assert s["mean_intercept_px"] == 16.0 and s["mean_intercept_um"] == 32.0
    assert s["astm_G_intercept"] == pytest.approx(intercept.astm_grain_size_from_intercept(32.0))
    assert grains.grain_size_summary(labels, boundary=boundary)["astm_G_intercept"] is None  # no pixel size


def test_evaluate_pools_the_crops_of_a_micrograph(tmp_path):
    data = tmp_path / "data"
    write_folder(data, n=3)
    for i, name in enumerate(("spec_1-0-0", "spec_1-0-96", "spec_2-0-0")):
        for sub in ("images", "labels"):
            os.rename(data / sub / f"m{i}.png", data / sub / f"{name}.png")
    out = tmp_path / "e.json"
    proc = evaluate("--baseline", "colour_edges", "--data_dir", str(data), "--out", str(out), "--group_regex", r"_(\d+)-")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    groups = result["per_micrograph"]
    assert sorted(groups) == ["1", "2"] and groups["1"]["images"] == ["spec_1-0-0.png", "spec_1-0-96.png"]
    # The true intercept of micrograph 1 is its two label maps' lines over their crossings.
    parts = [
        intercept.count_intercepts(grains.grains_from_boundary(np.asarray(Image.open(data / "labels" / n)) > 0))
        for n in groups["1"]["images"]
    ]
    assert groups["1"]["intercept_px_gt"] == pytest.approx(intercept.pooled(parts).mean_px)
    per_image = result["per_image"]["spec_2-0-0.png"]
    assert groups["2"]["intercept_rel_error"] == pytest.approx(per_image["intercept_rel_error"])
    assert result["mean_per_micrograph"]["n_micrographs"] == 2
    assert "micrograph 1: intercept" in proc.stdout
    # A regex that is not one, or misses a file, is one line naming --group_regex; nothing is written.
    for regex, named in (("_(\\d+", "not a valid regular expression"), (r"_(\d+)x", "does not match the file name")):
        bad_out = tmp_path / "bad.json"
        proc = evaluate("--baseline", "colour_edges", "--data_dir", str(data), "--out", str(bad_out), "--group_regex", regex)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "--group_regex" in lines[0] and named in lines[0], proc.stderr
        assert not bad_out.exists()
