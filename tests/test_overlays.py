"""Burned-in annotations (data/overlays.py): found on micrographs, never in a micrograph's own content, filled
in before the model, and left out of the grains by measure/predict."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from fedtransfer_jax import metrics as metrics_lib
from fedtransfer_jax.analysis import batch, measure
from fedtransfer_jax.data import overlays, synthetic
from fedtransfer_jax.metrics import grains as grains_lib
from fedtransfer_jax.metrics.intercept import count_intercepts
from test_predict_safety import FakeModel, grain_image

BAR = (120, 170, 180, 175)  # x0, y0, x1, y1 (inclusive) of a white scale bar
BOX = (10, 150, 70, 180)  # a black label box with white text


def labelled(image: np.ndarray) -> np.ndarray:
    """``image`` (float [H, W, 3]) with a white scale bar and a black box holding white text, as uint8."""
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    draw.rectangle(BAR, fill=(255, 255, 255))
    draw.rectangle(BOX, fill=(0, 0, 0))
    draw.text((BOX[0] + 6, BOX[1] + 8), "50 um", fill=(255, 255, 255))
    return np.asarray(pil)


def as_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0


def drawn(shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x0, y0, x1, y1 in (BAR, BOX):
        m[y0 : y1 + 1, x0 : x1 + 1] = True
    return m


@pytest.fixture(scope="module")
def micrographs():
    """Two synthetic micrographs of every lab, 192 px, grains of 8-200 px."""
    out = []
    for lab in synthetic.LAB_NAMES:
        images, _, _ = synthetic.make_lab_examples(lab, 2, 192, 11, diameter_px=(8, 200))
        out += list(images)
    return out


@pytest.mark.parametrize("value,want", [("auto", "auto"), (" None ", "none")])
def test_parse_mode(value, want):
    assert overlays.parse_mode(value) == want


@pytest.mark.parametrize("value", ["", "yes", "0"])
def test_parse_mode_refuses_naming_the_flag(value):
    with pytest.raises(ValueError, match="--overlays"):
        overlays.parse_mode(value)


def rare(image: np.ndarray, colour) -> bool:
    """Whether the micrograph itself hardly has this pure colour (then a box of it must be found)."""
    return (np.abs(image - np.asarray(colour)) <= overlays.PURE_TOL).all(axis=-1).mean() <= overlays.COMMON / 2


@pytest.mark.parametrize("fmt", ["png", "jpeg75"])
def test_a_scale_bar_and_a_label_box_are_found_and_nothing_else(micrographs, fmt):
    expected = found = 0
    for image in micrographs[::2]:
        rgb = labelled(image)
        x = rgb.astype(np.float32) / 255.0 if fmt == "png" else as_jpeg(rgb, 75)
        mask = overlays.find(x)
        near = ndimage.binary_dilation(drawn(mask.shape), np.ones((3, 3), bool), iterations=overlays.MARGIN + 1)
        assert not mask[~near].any()  # only what was drawn (and its anti-aliased edge)
        for x0, y0, x1, y1 in [rect for rect, colour in ((BAR, (1, 1, 1)), (BOX, (0, 0, 0))) if rare(image, colour)]:
            expected += 1
            found += bool(mask[y0 : y1 + 1, x0 : x1 + 1].all())  # every pixel of it, the text's too
    # JPEG's colour subsampling bleeds a saturated micrograph into a thin bar: most, not all, on colour images.
    assert found == expected if fmt == "png" else found >= 0.8 * expected
    assert expected >= 10


def test_a_box_in_a_colour_the_micrograph_has_is_left_alone():
    images, _, _ = synthetic.make_lab_examples("darkfield", 2, 192, 11, diameter_px=(8, 200))
    image = images[1]  # a dark-field micrograph: much of it near black
    assert not rare(image, (0, 0, 0)) and rare(image, (1, 1, 1))
    mask = overlays.find(labelled(image).astype(np.float32) / 255.0)
    x0, y0, x1, y1 = BAR
    assert mask[y0 : y1 + 1, x0 : min(x1, 191) + 1].all()  # the white bar is found
    x0, y0, x1, y1 = BOX
    assert not mask[y0 : y1 + 1, x0 : x1 + 1].any()  # the black box on black is not


@pytest.mark.parametrize("fmt", ["png", "jpeg20", "grey"])
def test_micrographs_have_no_annotations(micrographs, fmt):
    for image in micrographs:
        x = image
        if fmt == "jpeg20":
            x = as_jpeg((np.clip(image, 0, 1) * 255).astype(np.uint8), 20)
        elif fmt == "grey":
            x = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
        assert not overlays.find(x).any()


def test_a_clipped_pore_and_a_drawing_of_flat_cells_are_not_annotations(micrographs):
    pore = micrographs[0].copy()
    yy, xx = np.mgrid[:192, :192]
    pore[(yy - 90) ** 2 + (xx - 100) ** 2 <= 20**2] = 0.0  # a round pore clipped to black: flat, pure, not a box
    assert not overlays.find(pore).any()
    cells = np.repeat((grain_image(96, 96).astype(np.float32) / 230.0).clip(0, 1)[..., None], 3, axis=-1)
    assert not overlays.find(cells).any()  # 144 flat white squares: a drawing, not a labelled micrograph


def test_fill_continues_the_surroundings_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    image = np.full((64, 80, 3), (0.2, 0.5, 0.7), np.float32) + rng.normal(0, 1e-3, (64, 80, 3)).astype(np.float32)
    mask = np.zeros((64, 80), bool)
    mask[20:40, 30:75] = True
    image[mask] = 1.0  # a white box
    out = overlays.fill(image, mask)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    np.testing.assert_allclose(out[mask], np.broadcast_to((0.2, 0.5, 0.7), out[mask].shape), atol=5e-3)
    np.testing.assert_array_equal(overlays.fill(image, np.zeros_like(mask)), image)
    big = np.zeros((64, 80), bool)
    big[:, :70] = True  # far from every unmasked pixel: the nearest one
    assert np.isfinite(overlays.fill(image, big)).all()


def test_grains_next_to_a_left_out_region_count_as_cut():
    lab = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 10, axis=0), 10, axis=1).astype(np.int32)
    full = metrics_lib.grain_size_summary(lab, pixel_size_um=1.0, check=False)
    assert full["n_grains_astm"] == 4 + 0.5 * 12  # the 12 on the image's edge are halves
    box = np.zeros(lab.shape, bool)
    box[14:26, 14:26] = True  # a box left out over the corners of the 4 inner grains
    cut = metrics_lib.grain_size_summary(lab, pixel_size_um=1.0, check=False, outside=box)
    assert cut["n_grains"] == 16 and cut["n_grains_astm"] == 0.5 * 16
    field = 40 * 40 - 12 * 12
    assert cut["astm_G"] == pytest.approx(metrics_lib.astm_grain_size_number(field / 8.0))
    rows = metrics_lib.grain_table(lab, exclude_border=True, outside=box)
    assert rows == [] and sum(r["area_px"] for r in metrics_lib.grain_table(lab, outside=box)) == field
    # The boundary fraction is the field's: a map whose only boundary is the left-out box has none.
    withhold, _ = grains_lib.grain_size_plausibility(lab, boundary=box, outside=box)
    assert any("no boundary pixel" in w for w in withhold)
    # Without `outside`, label 0 keeps its meaning (an unassigned boundary pixel), as before.
    holes = lab.copy()
    holes[5::10] = 0  # rows of unassigned pixels inside the grains
    assert metrics_lib.grain_size_summary(holes, check=False)["n_grains_astm"] == 4 + 0.5 * 12


def brute_force_intercepts(lab: np.ndarray, outside: np.ndarray) -> tuple[list[float], list[int]]:
    """Line lengths and crossings walked pixel by pixel along every row, column and diagonal: a step counts
    where both pixels are in the field; a crossing is two different grains with only boundary (0) between."""
    h, w = lab.shape
    lines = [[(i, j) for j in range(w)] for i in range(h)], [[(i, j) for i in range(h)] for j in range(w)]
    diag = [[(i, i + d) for i in range(h) if 0 <= i + d < w] for d in range(-h + 1, w)]
    anti = [[(i, d - i) for i in range(h) if 0 <= d - i < w] for d in range(h + w - 1)]
    length, crossings = [], []
    for family, step in ((lines[0], 1.0), (lines[1], 1.0), (diag, 2 ** 0.5), (anti, 2 ** 0.5)):
        total, count = 0.0, 0
        for line in family:
            previous = None
            for k, (i, j) in enumerate(line):
                if k and not outside[i, j] and not outside[line[k - 1]]:
                    total += step
                if outside[i, j]:
                    previous = None
                elif lab[i, j] > 0:
                    count += previous is not None and previous != lab[i, j]
                    previous = lab[i, j]
        length.append(total)
        crossings.append(count)
    return length, crossings


def test_intercept_lines_stop_at_a_left_out_region():
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 5, (13, 17)).astype(np.int32)  # grains 1-4, unassigned boundary 0
    outside = np.zeros(lab.shape, bool)
    outside[4:8, 6:12] = True
    outside[11, 0:3] = True
    got = count_intercepts(lab, outside=outside)
    length, crossings = brute_force_intercepts(lab, outside)
    np.testing.assert_allclose(got.line_px, length)
    assert list(got.crossings) == crossings
    nothing = count_intercepts(lab, outside=np.zeros(lab.shape, bool))
    assert nothing == count_intercepts(lab)
    plain_length, plain_crossings = brute_force_intercepts(lab, np.zeros(lab.shape, bool))
    np.testing.assert_allclose(nothing.line_px, plain_length)
    assert list(nothing.crossings) == plain_crossings


def test_a_frame_around_part_of_the_micrograph_is_not_a_box(micrographs):
    image = labelled(micrographs[0])
    pil = Image.fromarray(image)
    ImageDraw.Draw(pil).rectangle((60, 20, 180, 110), outline=(255, 255, 0), width=3)  # a region-of-interest frame
    mask = overlays.find(np.asarray(pil, np.float32) / 255.0)
    assert not mask[30:100, 70:170].any()  # the micrograph inside it stays
    assert overlays.find(np.asarray(pil.convert("L"), np.float32) / 255.0)[BAR[1] : BAR[3] + 1, BAR[0] : BAR[2] + 1].all()


def test_measure_leaves_a_box_out_of_the_grains(tmp_path):
    grey = grain_image(48, 96)  # 230 grains, 20 lines every 8 px
    grey[16:32, 40:64] = 255  # a white box over 2 x 3 cells and the lines between them
    path = tmp_path / "boxed.png"
    Image.fromarray(grey).save(path)
    settings = measure.postprocess_choice.resolve_settings(None, None, {"min_fragment_px": 0}, 0.5)[0]
    m = measure.measure_image(FakeModel(), str(path), pixel_size_um=None, exclude_border=False, settings=settings)
    plain = measure.measure_image(
        FakeModel(), str(path), pixel_size_um=None, exclude_border=False, settings=settings, overlays="none"
    )
    box = np.zeros(grey.shape, bool)
    box[16:32, 40:64] = True
    assert m.left_out is not None and m.left_out[box].all() and m.boundary[box].all()
    assert m.summary["overlays"]["regions"] == 1 and any("flat rectangle" in n for n in m.summary["notes"])
    # Independent count: the cells of the grid that the box, grown by the 2 px margin, does not cover.
    grown = np.zeros(grey.shape, bool)
    grown[14:34, 38:66] = True
    np.testing.assert_array_equal(m.left_out, grown)
    cells, n = ndimage.label(~((grey < 128) | grown), structure=ndimage.generate_binary_structure(2, 1))
    assert m.summary["n_grains"] == n == 6 * 12 - 2 * 3
    # As it is, the white box is one grain with the cells it touches: fewer grains.
    assert plain.summary["n_grains"] == ndimage.label(grey >= 128, structure=ndimage.generate_binary_structure(2, 1))[1]
    assert plain.summary["n_grains"] < n
    assert "overlays" not in plain.summary


def test_predict_records_the_annotations(tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    grey = grain_image(48, 96)
    grey[16:32, 40:64] = 255
    Image.fromarray(grey).save(images / "boxed.png")
    Image.fromarray(grain_image(48, 96)).save(images / "clean.png")
    logged: list[str] = []
    manifest = batch.predict_folder(FakeModel(), str(images), str(tmp_path / "out"), log=logged.append, min_fragment_px=0)
    assert manifest["inference"]["overlays"] == "auto"
    assert manifest["images"]["boxed"]["overlays"]["regions"] == 1 and "overlays" not in manifest["images"]["clean"]
    assert any("boxed.png" in line and "flat rectangle" in line for line in logged)
