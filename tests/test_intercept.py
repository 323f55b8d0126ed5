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


def naive_intercepts(labels: np.ndarray, spacing: int = 1) -> tuple[list[float], list[int]]:
    """Walk every test line pixel by pixel, remembering the last grain seen (the definition, written out):
    rows, columns, then the diagonals down-right and down-left; a line of n pixels is n - 1 steps."""
    h, w = labels.shape
    rows = [[(i, j) for j in range(w)] for i in range(h)]
    cols = [[(i, j) for i in range(h)] for j in range(w)]
    down_right = [[(i, i + d) for i in range(h) if 0 <= i + d < w] for d in range(-(h - 1), w)]
    down_left = [[(i, w - 1 - (i + d)) for i in range(h) if 0 <= i + d < w] for d in range(-(h - 1), w)]
    lines, crossings = [], []
    for family, step in ((rows, 1.0), (cols, 1.0), (down_right, math.sqrt(2)), (down_left, math.sqrt(2))):
        length, total = 0.0, 0
        for line in family[::spacing]:
            length += max(len(line) - 1, 0) * step
            last = 0
            for i, j in line:
                v = labels[i, j]
                if v:
                    total += int(last != 0 and v != last)
                    last = v
        lines.append(length)
        crossings.append(total)
    return lines, crossings


def test_square_grid_crossings_do_not_depend_on_the_boundary_width():
    labels, _ = square_grid(8, 16)
    got = intercept.count_intercepts(labels)
    assert got.crossings[:2] == (8 * 128, 8 * 128)  # every row and column crosses 8 grain edges
    for width in (1, 3, 5):  # a 5 px line must not blank the test lines lying inside it
        _, boundary = square_grid(8, 16, width)
        assert intercept.count_intercepts(grains.grains_from_boundary(boundary)) == got, width
    # Isotropic lines: P_L = (2 / pi) L_A = 4 / (pi a); the four orientations give (1 + sqrt 2) / (2 a).
    assert got.mean_px == pytest.approx(16 * 2 / (1 + math.sqrt(2)), rel=0.015)


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
    assert intercept.pooled(parts).mean_px == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("angle", [0, 22.5, 45, 60, 90])
def test_lamellae_at_any_angle_read_close_to_isotropic_lines(angle):
    # Parallel boundaries s apart: isotropic random lines give l = pi s / 2. Rows and columns alone read
    # 31 % long at 0 degrees; with the diagonals every angle is within 8 %.
    s, t = 20, math.radians(angle)
    y, x = np.mgrid[0:512, 0:512]
    labels = np.floor((x * math.cos(t) + y * math.sin(t)) / s).astype(np.int64)
    got = intercept.count_intercepts((labels - labels.min() + 1).astype(np.int32)).mean_px
    assert abs(got / (math.pi * s / 2) - 1) < 0.08, got


@pytest.mark.parametrize("spacing", [1, 3])
def test_matches_a_naive_walk_with_unlabelled_pixels(spacing):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, (23, 31)).astype(np.int32)  # 0 = unlabelled, skipped along a line
    labels[5] = 0  # a line with no grain at all
    got = intercept.count_intercepts(labels, spacing=spacing)
    lines, crossings = naive_intercepts(labels, spacing)
    assert list(got.crossings) == crossings
    assert list(got.line_px) == pytest.approx(lines)


def test_pooling_sums_per_direction_and_one_grain_has_only_a_bound():
    labels, _ = square_grid(8, 16)
    crops = [intercept.count_intercepts(labels[:64]), intercept.count_intercepts(labels[64:])]
    pooled = intercept.pooled(crops)
    assert pooled.crossings == tuple(a + b for a, b in zip(*(c.crossings for c in crops)))
    assert pooled.line_px == pytest.approx([a + b for a, b in zip(*(c.line_px for c in crops))])
    one = intercept.count_intercepts(np.ones((8, 8), np.int32))
    # No crossing on any line: scored as one crossing per direction, over 8 rows x 7 steps, 8 columns x 7
    # steps and 64 - 15 diagonal steps of sqrt(2) px per diagonal direction.
    rows, diagonals = 8 * 7, (64 - 15) * math.sqrt(2)
    assert one.mean_px is None and one.at_least_px == pytest.approx(4 / (2 / rows + 2 / diagonals))


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
    expected = intercept.count_intercepts(labels).mean_px
    assert s["mean_intercept_px"] == expected and s["mean_intercept_um"] == 2 * expected
    assert s["astm_G_intercept"] == pytest.approx(intercept.astm_grain_size_from_intercept(2 * expected))
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
    g = intercept.astm_grain_size_from_intercept
    r = groups["1"]
    assert r["astm_G_diff"] == pytest.approx(g(r["intercept_px_pred"]) - g(r["intercept_px_gt"]))
    assert result["mean_per_micrograph"]["n_micrographs"] == 2
    assert "micrograph 1: intercept" in proc.stdout
    # A regex that is not one, or misses a file, is one line naming --group_regex; nothing is written.
    for regex, named in (
        ("_(\\d+", "not a valid regular expression"),
        (r"_(\d+)x", "does not match the file name"),
        (r"(x)?spec_\d+", "group 1 is empty"),  # an optional group that took no part in the match
    ):
        bad_out = tmp_path / "bad.json"
        proc = evaluate("--baseline", "colour_edges", "--data_dir", str(data), "--out", str(bad_out), "--group_regex", regex)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "--group_regex" in lines[0] and named in lines[0], proc.stderr
        assert not bad_out.exists()
