"""Map stability (analysis/stability.py): how much the grain map changes between neighbouring scales.

A true grain structure drawn at any scale gives the same grains; texture does not. The fake models here
return the image's own darkness as the boundary probability, so a rendered grain structure is
scale-stable by construction and white noise is not.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedtransfer_jax.analysis import scale as scale_lib
from fedtransfer_jax.analysis import stability
from fedtransfer_jax.metrics import grains as grains_lib
from fedtransfer_jax.metrics import postprocess_select as pps
from test_predict_safety import FakeModel
from test_scale import render

SETTINGS = pps.BUILTIN_DEFAULTS


def lines(h: int, w: int, every: int, offset: int = 0) -> np.ndarray:
    """A boundary map of vertical lines every ``every`` px: ``w // every`` stripe grains."""
    b = np.zeros((h, w), bool)
    b[:, offset::every] = True
    return b


def test_neighbours_are_the_adjacent_candidates() -> None:
    cands = [1.0, 1 / 1.5, 0.5, 1 / 3]
    assert stability.neighbours(cands, 1.0) == [1 / 1.5]
    assert stability.neighbours(cands, 0.5) == [1 / 1.5, 1 / 3]
    assert stability.neighbours([1.0], 1.0) == []


def test_the_same_grains_agree_fully_and_different_ones_do_not() -> None:
    a = lines(64, 64, 16)
    assert stability.agreement(a, a.copy()) == pytest.approx(1.0)
    # Stripes twice as fine: every grain split in two. ARI by hand: 4 grains of 16 columns vs 8 of 8.
    b = lines(64, 64, 8)
    ga, gb = grains_lib.grains_from_boundary(a), grains_lib.grains_from_boundary(b)
    assert stability.agreement(a, b) == pytest.approx(grains_lib.adjusted_rand_index(ga, gb))
    assert stability.agreement(a, b) < 0.7


def voronoi_boundary(h: int, w: int, seed: int) -> np.ndarray:
    """An aperiodic boundary map (Voronoi grains ~14 px, 1-px lines): any misplaced crop changes its grains."""
    from fedtransfer_jax.data import microstructure  # noqa: PLC0415

    g = microstructure.generate_microstructure(
        np.random.default_rng(seed), max(h, w), method="voronoi", mean_grain_diameter_px=14.0, warp=0.0
    )[:h, :w]
    return microstructure.boundary_map(g, 1) > 0


def test_views_are_compared_on_the_pixels_both_cover() -> None:
    """A small off-centre view and a larger one of the same grains agree fully once cropped to their overlap
    (rows and columns kept apart: the boxes are not square and the grains not periodic); a view of other
    grains does not."""
    full = voronoi_boundary(100, 140, seed=3)
    small_box, large_box = (20, 30, 40, 70), (0, 0, 100, 140)
    small = full[20:60, 30:100]
    value, used = stability.at_scale({1.0: (small, small_box), 0.5: (full, large_box)}, 1.0, [1.0, 0.5])
    assert value == pytest.approx(1.0) and used == [0.5]
    swapped = full[30:70, 20:90]  # the same box with y and x exchanged: other pixels
    value, _ = stability.at_scale({1.0: (swapped, small_box), 0.5: (full, large_box)}, 1.0, [1.0, 0.5])
    assert value < 0.8
    other = voronoi_boundary(100, 140, seed=4)
    value, _ = stability.at_scale({1.0: (small, small_box), 0.5: (other, large_box)}, 1.0, [1.0, 0.5])
    assert value < 0.5


def test_auto_on_a_large_non_square_image_compares_aligned_views() -> None:
    """Over 384 px the candidates' views are different central crops; mapped back and aligned, the grains of
    a clean rendered structure agree closely between neighbouring scales."""
    image = render(700, 30.0, 3)[:460]
    # Aimed at scale 1 (the grains measure ~32 px there), whose 384 px view is compared with scale 2/3's
    # 460 x 576 view: different boxes in both directions.
    _, rec = scale_lib.probabilities(FakeModel(), image, scale="auto", settings=SETTINGS, target=(32.0, "t"))
    assert rec["used"] == 1.0 and rec["stability_compared_with"] == ["0.667"], rec
    assert rec["stability"] > 0.95, rec


def test_one_candidate_has_no_stability() -> None:
    assert stability.at_scale({1.0: (lines(8, 8, 4), (0, 0, 8, 8))}, 1.0, [1.0]) == (None, [])


def test_auto_records_stability_high_for_grains_and_low_for_noise() -> None:
    """Through the scale search: a rendered grain structure keeps its grains at the neighbouring scales,
    a field of white noise (a model segmenting texture) does not."""
    grains = render(256, 24.0, 3)
    _, rec = scale_lib.probabilities(FakeModel(), grains, scale="auto", settings=SETTINGS, target=(12.0, "t"))
    assert rec["stability"] is not None and rec["stability"] >= 0.6, rec
    assert len(rec["stability_compared_with"]) in (1, 2)
    noise = np.random.default_rng(0).uniform(size=(256, 256, 1)).repeat(3, axis=-1).astype(np.float32)
    _, rec_noise = scale_lib.probabilities(FakeModel(), noise, scale="auto", settings=SETTINGS, target=(12.0, "t"))
    assert rec_noise["stability"] is not None and rec_noise["stability"] < 0.45, rec_noise
    assert rec_noise["stability"] < rec["stability"] - 0.2


def test_a_fixed_scale_records_no_stability() -> None:
    _, rec = scale_lib.probabilities(FakeModel(), render(64, 12.0, 2), scale=1.0)
    assert "stability" not in rec


def test_predict_records_the_value_in_the_json_the_csv_and_the_report(tmp_path) -> None:
    from fedtransfer_jax import predict  # noqa: PLC0415
    from test_predict_safety import save  # noqa: PLC0415

    noise = (np.random.default_rng(1).uniform(size=(256, 256)) * 255).astype(np.uint8)
    save(tmp_path / "in" / "noise.png", noise)
    save(tmp_path / "in" / "grains.png", (render(256, 24.0, 3)[..., 0] * 255).astype(np.uint8))
    model = FakeModel()
    model.trained_grain_px = (12.0, "t")
    manifest = predict.predict_folder(model, str(tmp_path / "in"), str(tmp_path / "out"), settings=SETTINGS, scale="auto")
    noisy, clean = manifest["images"]["noise"]["scale"], manifest["images"]["grains"]["scale"]
    assert noisy["stability"] < clean["stability"] - 0.2
    rows = (tmp_path / "out" / "grain_sizes_summary.csv").read_text().splitlines()
    assert rows[0].endswith(",map_stability")
    by_name = {r.split(",")[0]: r.split(",")[-1] for r in rows[1:]}
    assert float(by_name["noise"]) == noisy["stability"] and float(by_name["grains"]) == clean["stability"]
    assert f"map stability {clean['stability']:.2f}" in (tmp_path / "out" / "report.html").read_text()
