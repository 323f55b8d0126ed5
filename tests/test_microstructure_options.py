"""Microstructures beyond equiaxed single-phase grains (data/microstructure.py): twinned, rolled, bimodal."""

import numpy as np
import pytest
from scipy import ndimage

from fedtransfer_jax.data import microstructure as ms


def _gen(method, seed=0, size=64, d=14.0):
    return ms.generate_microstructure(np.random.default_rng([seed, 7]), size, method=method,
                                      mean_grain_diameter_px=d, dispersion=0.3, warp=0.1)


@pytest.mark.parametrize("method", ["twinned", "rolled", "bimodal"])
def test_valid_deterministic_maps(method):
    g = _gen(method)
    assert g.dtype == np.int32 and g.shape == (64, 64)
    np.testing.assert_array_equal(g, ms.relabel_connected(g))  # every id one 4-connected region
    assert ms.grain_areas(g).min() >= ms.MIN_GRAIN_AREA and g.max() + 1 >= 4
    np.testing.assert_array_equal(g, _gen(method))


def test_annealing_twins_are_straight_parallel_lamellae():
    g = np.zeros((48, 48), np.int32)  # one big grain: every lamella crosses it
    pairs = 0
    for seed in range(6):
        t = ms.add_annealing_twins(np.random.default_rng(seed), g, fraction=1.0)
        assert t.max() >= 2  # matrix | twin | matrix at least
        band = ms.boundary_map(t, 1).astype(bool)
        lab, n = ndimage.label(band, structure=np.ones((3, 3)))
        dirs = []
        for k in range(1, n + 1):
            pts = np.argwhere(lab == k).astype(float)
            if len(pts) < 20:
                continue
            _, sv, vt = np.linalg.svd(pts - pts.mean(0), full_matrices=False)
            assert sv[1] / sv[0] < 0.06  # a straight trace (pixel staircase aside)
            dirs.append(vt[0])
        assert all(abs(abs(d @ dirs[0]) - 1) < 0.02 for d in dirs)  # parallel traces
        pairs += len(dirs) >= 2
    assert pairs >= 3


def test_twins_add_boundaries_to_the_parent_map():
    rng = np.random.default_rng(0)
    parents = ms.generate_microstructure(rng, 64, method="laguerre", mean_grain_diameter_px=16.0, dispersion=0.2)
    twinned = ms.add_annealing_twins(np.random.default_rng(1), parents, fraction=0.6)
    assert twinned.max() > parents.max()
    # Parent boundaries are kept (but for the few pixels where a sliver of matrix under MIN_GRAIN_AREA was
    # merged into the neighbouring grain).
    assert np.mean(ms.boundary_map(twinned)[ms.boundary_map(parents) == 1] == 1) > 0.97


def test_rolled_grains_are_elongated_along_x_with_target_size():
    aspects, sizes = [], []
    for seed in range(4):
        g = _gen("rolled", seed, size=96, d=16.0)
        sizes.append(ms.mean_equivalent_diameter(g))
        for sl in ndimage.find_objects(g + 1):
            if sl is not None and sl[0].start > 0 and sl[0].stop < 96 and sl[1].start > 0 and sl[1].stop < 96:
                aspects.append((sl[1].stop - sl[1].start) / (sl[0].stop - sl[0].start))
    assert np.median(aspects) > 1.6
    assert abs(np.mean(sizes) / 16.0 - 1.0) < 0.2


def test_bimodal_has_two_grain_size_populations():
    areas = np.concatenate([ms.grain_areas(_gen("bimodal", s, size=96, d=8.0)) for s in range(4)])
    fine = np.pi / 4 * 8.0**2
    assert np.sum(areas > 6 * fine) >= 2 and np.median(areas) < 2 * fine  # a few coarse grains in a fine matrix
