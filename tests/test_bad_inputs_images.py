"""Inputs that used to give silently wrong results ("Never silently wrong"), through the public entry points.

Camera JPEGs with an EXIF orientation, CMYK JPEGs/TIFFs, palette (indexed-colour) labels, NaN pixels in
float TIFFs, FIFOs named like images, grain sizes of maps that cannot hold a grain size, malformed flags
and config values. Each case asserts the message (naming the file/flag/key), exit status 2 for CLI errors,
and that nothing was lost or left half-written. Tiny images made here; nothing trains.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from fedtransfer_jax.runs import engine
from fedtransfer_jax import evaluate, predict
from fedtransfer_jax.runtime import workdir as workdir_lib
from fedtransfer_jax.data import folder, image_files, load_federated_data
from fedtransfer_jax.metrics import grains
from test_bad_inputs import (  # noqa: I001 (helpers shared with the first catalogue)
    REPO,
    FakeModel,
    fake_load,  # noqa: F401 (fixture)
    folder_cfg,
    grid,
    labelled,
    predict_values,
    run_cli,
    save,
    snapshot,
    temp_files,
)

ORIENTATION = 0x0112


def exif(orientation: int) -> Image.Exif:
    e = Image.Exif()
    e[ORIENTATION] = orientation
    return e


def stored_for(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that a viewer applying ``orientation`` shows ``upright``."""
    inverse = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
    return image_files._apply_orientation(upright, inverse)


def micrograph(h: int = 24, w: int = 40) -> np.ndarray:
    """A smooth grey micrograph-like array (JPEG keeps it close), not symmetric under any flip."""
    y, x = np.mgrid[:h, :w]
    return (40 + 150 * (x / w) * (0.3 + 0.7 * y / h)).astype(np.uint8)


@pytest.fixture
def alarm():
    """Fails a test that blocks (a FIFO opened for reading) instead of hanging the suite."""

    def on_alarm(signum, frame):
        raise TimeoutError("blocked: a FIFO was opened")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------------------------
# 1. EXIF orientation.
# ----------------------------------------------------------------------------------------------


def test_orientation_transforms_match_pil_exif_transpose() -> None:
    a = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    for o in range(1, 9):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", exif=exif(o))
        buf.seek(0)
        expected = np.asarray(ImageOps.exif_transpose(Image.open(buf)))
        np.testing.assert_array_equal(image_files._apply_orientation(a, o), expected, err_msg=f"orientation {o}")


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_png_image_and_label_saved_rotated_read_upright(tmp_path: Path, orientation: int) -> None:
    upright = micrograph()
    Image.fromarray(stored_for(upright, orientation)).save(tmp_path / "i.png", exif=exif(orientation))
    np.testing.assert_array_equal(folder.read_image(tmp_path / "i.png")[..., 0], upright / np.float32(255))
    label = grid(24, 40)
    Image.fromarray(stored_for(label * 255, orientation)).save(tmp_path / "l.png", exif=exif(orientation))
    np.testing.assert_array_equal(folder.read_label(tmp_path / "l.png"), label)
    assert folder.upright_shape(tmp_path / "i.png") == (24, 40, orientation)


def test_camera_jpeg_with_orientation_6_reads_upright(tmp_path: Path) -> None:
    upright = micrograph()
    stored = stored_for(upright, 6)
    assert stored.shape == (40, 24)
    Image.fromarray(stored).save(tmp_path / "cam.jpg", quality=100, exif=exif(6))
    got = folder.read_image(tmp_path / "cam.jpg")
    assert got.shape == (24, 40, 3)
    assert np.abs(got[..., 0] * 255 - upright).max() <= 4  # JPEG rounding only


def test_rotated_jpeg_with_upright_label_pairs_in_training(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "images").mkdir(parents=True)
    for i in range(3):
        img = (230 - 200 * grid(24, 40)).astype(np.uint8)
        Image.fromarray(stored_for(img, 6)).save(root / "images" / f"img_{i}.jpg", quality=100, exif=exif(6))
        save(root / "labels" / f"img_{i}.png", grid(24, 40) * 255)
    image, label = folder.load_pair(root / "images" / "img_0.jpg", root / "labels" / "img_0.png")
    assert image.shape[:2] == label.shape == (24, 40)
    dark = image.mean(axis=-1) < 0.5  # the dark lines of the upright micrograph lie on the label's lines
    assert (dark == (label > 0)).mean() > 0.97
    fd = load_federated_data(folder_cfg(root, tmp_path), tmp_path / "work")
    assert list(fd.client_names) == ["c"]


def test_label_in_stored_orientation_is_an_error_naming_both_files(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    img = (230 - 200 * grid(24, 40)).astype(np.uint8)
    Image.fromarray(stored_for(img, 6)).save(root / "images" / "img_1.png", exif=exif(6))
    save(root / "labels" / "img_1.png", stored_for(grid(24, 40), 6) * 255)  # drawn on the stored pixels
    pairs = folder.list_pairs(root)
    with pytest.raises(ValueError, match=r"images/img_1\.png is 24x40.*labels/img_1\.png is 40x24.*orientation 6"):
        folder.check_client_labels(pairs, invert=False, invert_flag="--invert_labels", where="c")
    with pytest.raises(ValueError, match=r"images/img_1\.png is 24x40.*labels/img_1\.png is 40x24"):
        load_federated_data(folder_cfg(root, tmp_path), tmp_path / "work")
    assert not list((tmp_path / "tfds").rglob("*.array_record"))


def test_label_size_mismatch_exits_2_from_evaluate_cli(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    save(root / "labels" / "img_2.png", grid(24, 20) * 255)
    before = snapshot(root)
    proc = run_cli("fedtransfer_jax.evaluate", "--workdir", str(tmp_path / "wd"), "--data_dir", str(root))
    assert proc.returncode == evaluate.EXIT_USAGE, proc.stderr
    assert "images/img_2.png is 24x24" in proc.stderr and "labels/img_2.png is 24x20" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert snapshot(root) == before and not (tmp_path / "wd").exists()


def test_square_image_with_orientation_tag_but_label_without_warns(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    img = (230 - 200 * grid()).astype(np.uint8)
    Image.fromarray(stored_for(img, 6)).save(root / "images" / "img_0.png", exif=exif(6))
    with pytest.warns(folder.LabelWarning, match=r"images/img_0\.png \(orientation 6\).*upright"):
        folder.check_client_labels(folder.list_pairs(root), invert=False, invert_flag="--invert_labels", where="c")


# ----------------------------------------------------------------------------------------------
# 2. CMYK.
# ----------------------------------------------------------------------------------------------


def _rgb() -> np.ndarray:
    y, x = np.mgrid[:32, :32]
    return np.stack([x * 8, y * 8, (x + y) * 4], -1).astype(np.uint8)


def test_cmyk_jpeg_is_converted_not_read_as_inverted_rgb(tmp_path: Path) -> None:
    rgb = _rgb()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)  # PIL writes Adobe CMYK
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    got = folder.read_image(tmp_path / "c.jpg")
    corr = np.corrcoef(got.mean(-1).ravel(), rgb.mean(-1).ravel())[0, 1]
    assert corr > 0.99 and np.abs(got * 255 - rgb).max() <= 8


def test_cmyk_tiff_is_converted(tmp_path: Path) -> None:
    rgb = _rgb()
    tifffile.imwrite(tmp_path / "c.tif", np.asarray(Image.fromarray(rgb).convert("CMYK")), photometric="separated")
    got = folder.read_image(tmp_path / "c.tif")
    assert np.corrcoef(got.mean(-1).ravel(), rgb.mean(-1).ravel())[0, 1] > 0.99


# ----------------------------------------------------------------------------------------------
# 3. NaN pixels, grain sizes of maps that cannot hold one.
# ----------------------------------------------------------------------------------------------


def test_nan_pixel_in_float_tiff_is_refused_naming_the_file(tmp_path: Path) -> None:
    arr = np.full((24, 24), 0.8, np.float32)
    arr[3, 5] = np.nan
    path = save(tmp_path / "f.tif", arr)
    with pytest.raises(ValueError, match=r"f\.tif has 1 NaN/inf pixel.*\(3, 5\)"):
        folder.read_image(path)


def test_nan_image_in_predict_batch_fails_alone(images: Path, tmp_path: Path, fake_load, capsys) -> None:
    arr = np.full((24, 24), 0.8, np.float32)
    arr[0, 0] = np.inf
    save(images / "c.tif", arr)
    assert predict.run(predict_values(images, tmp_path / "out", tmp_path)) == predict.EXIT_SOME_FAILED
    assert "c.tif" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert [f["file"] for f in manifest["failed"]] == [str(images / "c.tif")]
    assert "NaN/inf" in manifest["failed"][0]["reason"]
    assert set(manifest["images"]) == {"a", "b"} and not temp_files(tmp_path / "out")


def _grid_boundary(n: int, every: int) -> np.ndarray:
    b = np.zeros((n, n), bool)
    b[every // 2 :: every] = True
    b[:, every // 2 :: every] = True
    return b


def _summary(boundary: np.ndarray, pixel: float | None = 1.0) -> dict:
    return grains.grain_size_summary(grains.grains_from_boundary(boundary), pixel, boundary=boundary)


def test_plausible_map_gets_a_grain_size() -> None:
    s = _summary(_grid_boundary(128, 16))  # 1-px lines: 6 % boundary, 64 grains, 36 inside
    assert s["astm_G"] is not None and s["size_withheld"] is None and s["warnings"] == []


def test_map_80_percent_boundary_gets_no_grain_size() -> None:
    b = np.ones((64, 64), bool)
    b[::4, ::4] = False  # 1-px islands between thick lines
    b[1::4, 1::4] = False
    s = _summary(b)
    assert s["n_grains"] > 0  # the grains are still counted and tabulated ...
    assert s["astm_G"] is None and s["mean_area_um2"] is None and s["mean_area_px"] is None  # ... not sized
    assert "boundary pixels 88% of the map" in s["size_withheld"]


def test_a_map_just_over_half_boundary_is_not_reported_as_50_percent() -> None:
    b = np.zeros((100, 100), bool)
    b[:, :50] = True
    b[0, 50:53] = True  # 50.03 % boundary: over the limit, but "50%" would read as allowed
    withhold, _ = grains.grain_size_plausibility(grains.grains_from_boundary(b), b)
    assert "boundary pixels just over 50% of the map" in withhold[0]


def test_one_pixel_image_gets_no_grain_size() -> None:
    s = _summary(np.zeros((1, 1), bool))
    assert s["astm_G"] is None and "image too small: 1x1 px" in s["size_withheld"]
    assert grains.grain_size_summary(np.ones((1, 1), np.int32), 1.0, check=False)["astm_G"] > 15  # was reported


def test_map_without_boundary_or_with_one_huge_grain_gets_no_grain_size() -> None:
    s = _summary(np.zeros((64, 64), bool))
    assert s["astm_G"] is None and "no boundary pixel" in s["size_withheld"]
    b = _grid_boundary(64, 16)
    b[:, : 40] = False  # a grain covering most of the image
    b[16::16, :40] = False
    s = _summary(b)
    assert s["astm_G"] is None and "one grain covers" in s["size_withheld"]


def test_few_complete_grains_get_no_grain_size() -> None:
    s = _summary(_grid_boundary(64, 32))  # 3x3 grains, one inside the image
    assert s["astm_G"] is None and "only 1 grain(s) not cut by the image edge" in s["size_withheld"]


def test_predict_reports_null_grain_size_with_reason(tmp_path: Path, fake_load, capsys) -> None:
    d = tmp_path / "in"
    save(d / "dark.png", np.full((40, 40), 30, np.uint8))  # FakeModel: dark = boundary everywhere
    assert predict.run(predict_values(d, tmp_path / "out", tmp_path, pixel_size_um=0.5)) == predict.EXIT_OK
    manifest = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    entry = manifest["images"]["dark"]
    assert entry["astm_G"] is None and entry["mean_area_um2"] is None
    assert entry["size_withheld"].startswith("grain size not reported") and entry["warnings"]
    assert "dark.png" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 4. FIFOs named like images.
# ----------------------------------------------------------------------------------------------


def test_fifo_in_predict_folder_is_skipped_not_opened(images: Path, tmp_path: Path, fake_load, alarm, capsys) -> None:
    os.mkfifo(images / "stuck.png")
    assert predict.run(predict_values(images, tmp_path / "out", tmp_path)) == predict.EXIT_OK
    manifest = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert [s["file"] for s in manifest["skipped"]] == [str(images / "stuck.png")]
    assert "not a regular file" in manifest["skipped"][0]["reason"]
    assert set(manifest["images"]) == {"a", "b"} and "stuck.png" in capsys.readouterr().err


def test_fifo_as_images_argument_is_an_error(tmp_path: Path, alarm) -> None:
    os.mkfifo(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"--images .*x\.png is not a regular file"):
        predict.run(predict_values(tmp_path / "x.png", tmp_path / "out", tmp_path))
    assert not (tmp_path / "out").exists()


def test_fifo_in_training_folder_is_skipped_with_a_warning(tmp_path: Path, alarm) -> None:
    root = labelled(tmp_path / "c")
    os.mkfifo(root / "images" / "img_9.png")
    with pytest.warns(folder.SkippedFileWarning, match=r"images/img_9\.png"):
        pairs = folder.list_pairs(root)
    assert [p[0].name for p in pairs] == ["img_0.png", "img_1.png", "img_2.png"]
    with pytest.raises(folder.NotRegularFileError, match=r"img_9\.png is a FIFO"):
        folder.read_image(root / "images" / "img_9.png")


# ----------------------------------------------------------------------------------------------
# 5. Palette labels.
# ----------------------------------------------------------------------------------------------


def _palette_label(index: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    img = Image.fromarray(index.astype(np.uint8), mode="P")
    flat = [c for rgb in colours for c in rgb]
    img.putpalette(flat + [0] * (768 - len(flat)))
    return img


def test_voc_palette_label_is_read_by_index(tmp_path: Path) -> None:
    _palette_label(grid(), [(0, 0, 0), (128, 0, 0)]).save(tmp_path / "l.png")  # VOC: class 1 dark red
    np.testing.assert_array_equal(folder.read_label(tmp_path / "l.png"), grid())
    root = labelled(tmp_path / "c")
    for i in range(3):
        _palette_label(grid(), [(0, 0, 0), (128, 0, 0)]).save(root / "labels" / f"img_{i}.png")
    assert evaluate.evaluate_folder(FakeModel(), str(root))["n_images"] == 3  # not "a micrograph or overlay"


def test_palette_label_with_white_index_0_marks_the_bright_colour(tmp_path: Path) -> None:
    _palette_label(1 - grid(), [(255, 255, 255), (0, 0, 0)]).save(tmp_path / "l.png")
    np.testing.assert_array_equal(folder.read_label(tmp_path / "l.png"), grid())


def test_palette_label_with_three_classes_is_an_error_naming_it(tmp_path: Path) -> None:
    index = grid().astype(np.uint8)
    index[:4, :4] = 2
    _palette_label(index, [(0, 0, 0), (128, 0, 0), (0, 128, 0)]).save(tmp_path / "l.png")
    with pytest.raises(ValueError, match=r"palette .*label .*l\.png uses 3 colour indices.*exactly two"):
        folder.read_label(tmp_path / "l.png")


# ----------------------------------------------------------------------------------------------
# 6./7. Flags and config values.
# ----------------------------------------------------------------------------------------------


def test_unparsable_pixel_size_exits_2_naming_the_flag(images: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "fedtransfer_jax.predict", "--workdir", str(tmp_path / "wd"), "--images", str(images),
        "--out", str(tmp_path / "out"), "--pixel_size_um=abc",
    )
    assert proc.returncode == predict.EXIT_USAGE
    assert proc.stderr.strip().splitlines() == ["predict: error: flag --pixel_size_um=abc: could not convert string to float: 'abc'"]
    assert not (tmp_path / "out").exists()


def tiny_config() -> ml_collections.ConfigDict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grains_config", REPO / "experiments" / "grains.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("tiny")


@pytest.mark.parametrize(
    "key, value",
    [
        ("fl.client_lr", -0.1),
        ("fl.client_lr", 0.0),
        ("style.lr", -1e-3),
        ("method_specs.fedavg.hparams.server_lr", -1.0),
        ("fl.clients_per_round", -1),
        ("data.tile_size", 0),
        ("data.tile_overlap", 32),
        ("data.source", "folders"),
        ("data.clients", ()),
        ("data.image_size", 7),
        ("model.dtype", "float16"),
    ],
)
def test_bad_config_values_name_the_key(key: str, value) -> None:
    config = tiny_config()
    node = config
    *path, last = key.split(".")
    for k in path:
        node = node[k]
    node[last] = value
    with pytest.raises(ValueError, match="config key " + key.replace(".", r"\.")):
        engine.validate_config(config)


def test_keys_that_would_be_ignored_are_refused(tmp_path: Path) -> None:
    """A data folder given without a source that reads it, or a method of an init_from that is not set, would
    train something else than asked and exit 0."""
    config = tiny_config()
    config.data.dir = str(tmp_path)
    with pytest.raises(ValueError, match=r"config key data\.dir is set .* data\.source is 'synthetic'"):
        engine.check_data_folder(config)
    config = tiny_config()
    config.init_from_method = "fedavg"
    with pytest.raises(ValueError, match=r"config key init_from_method='fedavg' .* init_from, which is not set"):
        engine.validate_config(config)


def test_clients_per_round_above_client_count_warns_naming_the_key(caplog) -> None:
    config = tiny_config()
    config.fl.clients_per_round = 99
    with caplog.at_level(logging.WARNING):
        assert engine.clients_per_round(config, 4) == 4
    assert "fl.clients_per_round=99" in caplog.text and "only 4 clients" in caplog.text


def test_negative_learning_rate_exits_2_from_launch_and_writes_no_config(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "launch.py", "--config", "experiments/grains.py:tiny", "--workdir", str(tmp_path / "wd"),
         "--config.fl.client_lr=-0.1"],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "fl.client_lr" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "wd" / "config.json").exists()


def test_failed_first_start_forgets_its_config(tmp_path: Path) -> None:
    wd = str(tmp_path / "wd")
    with pytest.raises(FileNotFoundError):
        with workdir_lib.open_workdir(wd, {"data": {"tile_size": 0}}):
            assert os.path.exists(os.path.join(wd, "config.json"))
            raise FileNotFoundError("data folder missing")  # what a refused data build raises
    assert not os.path.exists(os.path.join(wd, "config.json"))
    with workdir_lib.open_workdir(wd, {"data": {"tile_size": 32}}) as info:  # the corrected command
        assert info["resumed"] is False
    assert json.loads(Path(wd, "config.json").read_text()) == {"data": {"tile_size": 32}}


def test_failed_resume_keeps_the_config_of_trained_models(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    with workdir_lib.open_workdir(str(wd), {"a": 1}):
        (wd / "checkpoints").mkdir()
    with pytest.raises(RuntimeError):
        with workdir_lib.open_workdir(str(wd), {"a": 1}):
            raise RuntimeError("crash")
    assert json.loads((wd / "config.json").read_text()) == {"a": 1}
    (wd / "checkpoints").rmdir()
    (wd / "config.json").unlink()
    with pytest.raises(RuntimeError):
        with workdir_lib.open_workdir(str(wd), {"a": 2}):  # a first start that trained, then crashed
            (wd / "checkpoints").mkdir()
            raise RuntimeError("crash after training started")
    assert json.loads((wd / "config.json").read_text()) == {"a": 2}  # kept: it describes the checkpoints


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    for stem in ("a", "b"):
        save(d / f"{stem}.png", (230 - 200 * grid()).astype(np.uint8))
    return d


def test_a_tiff_of_two_unmarked_samples_is_refused_and_grey_alpha_is_read(tmp_path):
    two = np.zeros((10, 12, 2), np.uint8)
    two[..., 0], two[..., 1] = 50, 200
    tifffile.imwrite(tmp_path / "se_bse.tif", two, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "la.tif", two, photometric="minisblack", planarconfig="contig", extrasamples=["unassalpha"])
    with pytest.raises(ValueError, match=r"se_bse\.tif has two samples per pixel.*not marked as alpha"):
        image_files.read_image(tmp_path / "se_bse.tif")
    np.testing.assert_allclose(image_files.read_image(tmp_path / "la.tif"), 50 / 255, rtol=1e-6)
