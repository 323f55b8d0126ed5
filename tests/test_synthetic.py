"""Tests of the synthetic microstructures, boundary labels and lab renderers (tiny shapes, CPU)."""

from __future__ import annotations

import chex
import numpy as np
import pytest
from scipy import ndimage

from fedtransfer_jax.data import microstructure as ms
from fedtransfer_jax.data import styles
from fedtransfer_jax.data.synthetic import LAB_NAMES, describe_lab, generate_microstructure, make_lab_examples

SIZE = 48


def _ref_boundary_width2(grains: np.ndarray) -> np.ndarray:
    """Independent reference: a pixel is boundary iff any in-frame 4-neighbour has another id."""
    h, w = grains.shape
    out = np.zeros((h, w), np.uint8)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and grains[yy, xx] != grains[y, x]:
                    out[y, x] = 1
    return out


def _ref_mean_eq_diameter(grains: np.ndarray) -> float:
    areas = np.array([(grains == g).sum() for g in np.unique(grains)], dtype=np.float64)
    return float(np.mean(2.0 * np.sqrt(areas / np.pi)))


# ------------------------------------------------------------------------------------------------
# boundary_map
# ------------------------------------------------------------------------------------------------


def test_boundary_map_hand_case() -> None:
    grains = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], np.int32)
    expected_w2 = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]], np.uint8)
    expected_w1 = np.array([[0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(ms.boundary_map(grains, 2), expected_w2)
    np.testing.assert_array_equal(ms.boundary_map(grains, 1), expected_w1)
    assert ms.boundary_map(grains, 2).dtype == np.uint8


def test_boundary_map_matches_reference_and_widths_nest() -> None:
    grains = generate_microstructure(np.random.default_rng([3]), 32, method="voronoi", mean_grain_diameter_px=8.0)
    w2 = ms.boundary_map(grains, 2)
    np.testing.assert_array_equal(w2, _ref_boundary_width2(grains))
    w1, w3, w4 = (ms.boundary_map(grains, w) for w in (1, 3, 4))
    assert np.all(w1 <= w2) and np.all(w2 <= w4) and np.all(w1 <= w3)
    cross = ndimage.generate_binary_structure(2, 1)
    np.testing.assert_array_equal(w4, ndimage.binary_dilation(w2, cross).astype(np.uint8))
    assert w1.sum() < w2.sum() < w3.sum() < w4.sum()
    with pytest.raises(ValueError, match="width"):
        ms.boundary_map(grains, 0)


def test_relabel_connected_splits_pieces() -> None:
    grains = np.array([[5, 5, 7, 5], [7, 7, 7, 5], [5, 7, 9, 9]], np.int32)
    out = ms.relabel_connected(grains)
    # pieces: {5 top-left}, {7 ...}, {5 right column}, {5 bottom-left}, {9}
    assert out.max() + 1 == 5
    np.testing.assert_array_equal(np.unique(out), np.arange(5))
    np.testing.assert_array_equal(ms.boundary_map(out, 2), ms.boundary_map(grains, 2))


# ------------------------------------------------------------------------------------------------
# microstructures
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,dispersion,target", [("voronoi", 0.0, 9.0), ("laguerre", 0.4, 10.0), ("potts", 0.0, 9.0)]
)
def test_grain_size_control(method: str, dispersion: float, target: float) -> None:
    for i in range(3):
        g = generate_microstructure(
            np.random.default_rng([7, i]), 64, method=method, mean_grain_diameter_px=target, dispersion=dispersion
        )
        chex.assert_shape(g, (64, 64))
        assert g.dtype == np.int32
        np.testing.assert_array_equal(np.unique(g), np.arange(g.max() + 1))  # ids 0..K-1
        d = _ref_mean_eq_diameter(g)
        assert abs(d / target - 1.0) < 0.15, (method, i, d)
        # every id is a single 4-connected region
        assert ndimage.label(g == g[0, 0])[1] == 1


def test_laguerre_dispersion_widens_size_distribution() -> None:
    def cv(method: str, disp: float) -> float:
        areas = np.concatenate(
            [
                ms.grain_areas(
                    generate_microstructure(
                        np.random.default_rng([11, i]), 96, method=method, mean_grain_diameter_px=10.0, dispersion=disp
                    )
                )
                for i in range(3)
            ]
        )
        return float(areas.std() / areas.mean())

    assert cv("laguerre", 0.8) > cv("voronoi", 0.0)


def test_generate_microstructure_errors() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="voronoi.*laguerre.*potts"):
        generate_microstructure(rng, 32, method="hexagons", mean_grain_diameter_px=8.0)
    with pytest.raises(ValueError, match="laguerre"):
        generate_microstructure(rng, 32, method="voronoi", mean_grain_diameter_px=8.0, dispersion=0.3)


def test_potts_batched_growth_is_independent_of_batch_mates() -> None:
    starts, seeds, targets = [], [], []
    for i in range(3):
        s, k = ms.potts_start(np.random.default_rng([5, i]), SIZE, 8.0, 0.0)
        starts.append(s)
        seeds.append(k)
        targets.append(7.0 + i)
    together = ms.potts_grow(starts, seeds, targets)
    # Different batch mates, different order (image size as the lab fixture: no extra compile).
    other = ms.potts_grow([starts[1], starts[0]], [seeds[1], seeds[0]], [targets[1], targets[0] + 1.0])
    np.testing.assert_array_equal(together[1], other[0])
    assert not np.array_equal(together[0], other[1])  # its own target changed, so it did change
    for g, s, t in zip(together, starts, targets):
        assert ms.mean_equivalent_diameter(g) > ms.mean_equivalent_diameter(s)
        assert abs(ms.mean_equivalent_diameter(g) / t - 1.0) < 0.15


# ------------------------------------------------------------------------------------------------
# labs
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab_data() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return {lab: make_lab_examples(lab, 3, SIZE, seed=0) for lab in LAB_NAMES}


def test_lab_names_and_description() -> None:
    # The five built-in labs keep indices 0-4 (their images depend on it); data/labs/ adds more after them.
    assert LAB_NAMES[:5] == ("brightfield", "darkfield", "sem", "tint", "lowcontrast")
    for lab in LAB_NAMES:
        info = describe_lab(lab)
        assert info["style"] in styles.STYLES and info["method"] in ms.METHODS
        assert info["style_params"]
    with pytest.raises(ValueError, match="brightfield"):
        describe_lab("nope")
    with pytest.raises(ValueError, match="valid labs"):
        make_lab_examples("nope", 1, SIZE, 0)


@pytest.mark.parametrize("lab", LAB_NAMES)
def test_each_lab_renders(lab: str, lab_data) -> None:
    images, labels, grains = lab_data[lab]
    chex.assert_shape(images, (3, SIZE, SIZE, 3))
    chex.assert_shape([labels, grains], (3, SIZE, SIZE))
    assert images.dtype == np.float32 and labels.dtype == np.uint8 and grains.dtype == np.int32
    assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
    assert set(np.unique(labels)) <= {0, 1}
    assert images.std() > 0.01  # not blank
    for i in range(3):
        np.testing.assert_array_equal(labels[i], _ref_boundary_width2(grains[i]))  # labels exact w.r.t. grains
        assert grains[i].max() + 1 >= 3
    if describe_lab(lab)["style"] in ("darkfield", "sem", "lowcontrast"):
        chex.assert_trees_all_close(images[..., 0], images[..., 2])  # grey labs replicate the channel


def test_determinism_and_prefix_stability() -> None:
    a = make_lab_examples("brightfield", 3, 32, seed=1)
    b = make_lab_examples("brightfield", 3, 32, seed=1)
    c = make_lab_examples("brightfield", 3, 32, seed=2)
    more = make_lab_examples("brightfield", 4, 32, seed=1)
    for x, y, z in zip(a, b, more):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z[:3])  # adding images never changes earlier ones
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[2], c[2])


def test_potts_lab_deterministic_and_prefix_stable() -> None:
    a = make_lab_examples("sem", 2, SIZE, seed=4)
    more = make_lab_examples("sem", 3, SIZE, seed=4)
    for x, z in zip(a, more):
        np.testing.assert_array_equal(x, z[:2])


def test_labs_differ_in_statistics(lab_data) -> None:
    means = {lab: float(lab_data[lab][0].mean()) for lab in LAB_NAMES}
    assert means["darkfield"] < 0.35 < means["brightfield"]
    tint = lab_data["tint"][0]
    assert np.abs(tint[..., 0] - tint[..., 2]).mean() > 0.02  # tint is colour


def _boundary_vs_interior(images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    grey = images.mean(-1)
    return float(grey[labels == 1].mean()), float(grey[labels == 0].mean())


def test_label_image_alignment(lab_data) -> None:
    on, off = _boundary_vs_interior(*lab_data["brightfield"][:2])
    assert on < off - 0.03  # dark grooves on the labelled pixels
    on, off = _boundary_vs_interior(*lab_data["darkfield"][:2])
    assert on > off + 0.05  # bright scattering on the labelled pixels
    on, off = _boundary_vs_interior(*lab_data["lowcontrast"][:2])
    assert on < off


def test_labels_shifted_lose_alignment(lab_data) -> None:
    """The alignment test can fail: shifting the labels half a grain away removes the contrast."""
    images, labels, _ = lab_data["darkfield"]
    on, off = _boundary_vs_interior(images, labels)
    on_shift, _ = _boundary_vs_interior(images, np.roll(labels, 4, axis=2))
    assert on_shift < on - 0.05


def test_incomplete_etch_leaves_faint_labelled_boundaries() -> None:
    images, labels, _ = make_lab_examples("brightfield", 4, 64, seed=3)
    grey = images.mean(-1)
    interior = np.median(grey[labels == 0])
    frac_faint = np.mean(grey[labels == 1] > interior - 0.02)
    assert 0.02 < frac_faint < 0.6  # some labelled boundary pixels barely differ from grains


def test_styles_reject_unknown_and_missing_params() -> None:
    g = np.zeros((8, 8), np.int32)
    with pytest.raises(ValueError, match="valid"):
        styles.render("xray", np.random.default_rng(0), g, {})
    with pytest.raises(ValueError, match="missing"):
        styles.render("sem", np.random.default_rng(0), g, {"dose": 10.0})
