"""Inputs a researcher's folder really holds: a TIFF saved without its suffix, a JPEG saved as .tif, an empty
file, a broken link, a link beside its target, an image too large to hold, a float image in 0-255, mounting
resin read as one grain, a file added beside one measured before, --exclude_border_grains, `--out=` and
`--out=~/x`. Each is read by what it is, or refused with one message naming it, or measured with a note."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from absl import flags
from PIL import Image

from fedtransfer_jax import predict
from fedtransfer_jax.analysis import batch, report
from fedtransfer_jax.data import calibration, image_files
from fedtransfer_jax.metrics import grains as grains_lib
from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import console
from test_predict_safety import FakeModel, grain_image, save


def test_a_tiff_is_read_as_a_tiff_whatever_its_name(tmp_path: Path) -> None:
    img = grain_image(40, 48)
    tifffile.imwrite(tmp_path / "scan001", img, resolution=(2.0, 2.0), imagej=True, metadata={"unit": "um"})
    assert image_files.is_tiff(tmp_path / "scan001")
    np.testing.assert_allclose(image_files.read_image(tmp_path / "scan001")[..., 0], img / 255.0, atol=1e-6)
    assert calibration.read_calibration(tmp_path / "scan001").pixel_size_um == pytest.approx(0.5)
    assert image_files.upright_shape(tmp_path / "scan001") == (40, 48, 1)
    tifffile.imwrite(tmp_path / "stack", np.stack([img, 255 - img, img // 2, img, img]))
    with pytest.raises(ValueError, match="stack of 5 images"):
        image_files.read_image(tmp_path / "stack")
    Image.fromarray(img).save(tmp_path / "camera.tif", format="JPEG")  # a JPEG with a .tif name
    assert image_files.format_by_content(tmp_path / "camera.tif") == "JPEG"
    assert image_files.read_image(tmp_path / "camera.tif").shape == (40, 48, 3)


def test_empty_broken_float_and_oversized_files_are_named_with_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png is empty \(0 bytes\)"):
        image_files.read_image(tmp_path / "empty.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    with pytest.raises(FileNotFoundError, match=r"link\.png is a link to .*gone\.png, which does not exist"):
        image_files.read_image(tmp_path / "link.png")
    with pytest.raises(FileNotFoundError, match="a broken link"):
        inference.scan_images(str(tmp_path / "link.png"))
    tifffile.imwrite(tmp_path / "fiji32.tif", np.full((8, 8), 200.0, np.float32))
    with pytest.raises(ValueError, match=r"values in \[200, 200\], expected \[0, 1\]: save it as 8- or 16-bit"):
        image_files.read_image(tmp_path / "fiji32.tif")
    frames = [Image.fromarray(grain_image(16, 16) // k) for k in (1, 2, 3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ValueError, match=r"anim\.gif holds 3 frames \(an animation\)"):
        image_files.read_image(tmp_path / "anim.gif")
    frames[0].save(tmp_path / "anim.png", save_all=True, append_images=frames[1:])  # an APNG
    with pytest.raises(ValueError, match=r"anim\.png holds 3 frames"):
        image_files.read_image(tmp_path / "anim.png")
    os.symlink("loop_b.png", tmp_path / "loop_a.png")
    os.symlink("loop_a.png", tmp_path / "loop_b.png")
    with pytest.raises(FileNotFoundError, match=r"loop_a\.png is a link that leads back to itself"):
        image_files.read_image(tmp_path / "loop_a.png")
    Image.new("L", (9000, 8000)).save(tmp_path / "stitched.png")  # 72 Mpx, a few kB on disk
    with pytest.raises(ValueError, match=r"stitched\.png is 9000 x 8000 px \(72 Mpx\), more than the 64 Mpx"):
        image_files.read_image(tmp_path / "stitched.png")
    with tifffile.TiffWriter(tmp_path / "stitched.tif") as tif:  # a TIFF header of 9000 x 8000, tiles unwritten
        tif.write(shape=(8000, 9000), dtype=np.uint8, tile=(256, 256))
    with pytest.raises(ValueError, match=r"stitched\.tif is 9000 x 8000 px \(72 Mpx\)"):
        image_files.read_image(tmp_path / "stitched.tif")
    image_files.check_pixel_count("x.tif", 8000, 8000)  # 64 Mpx: allowed
    from PIL import Image as PILImage

    limit = PILImage.MAX_IMAGE_PIXELS
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match="cannot read image file"):  # PIL's limit is back after a failed open
        image_files.read_image(tmp_path / "bad.png")
    assert PILImage.MAX_IMAGE_PIXELS == limit


def test_a_folder_names_unsuffixed_images_and_measures_a_linked_file_once(tmp_path: Path) -> None:
    d = tmp_path / "in"
    save(d / "A.png", grain_image(40, 40))
    os.symlink("A.png", d / "b_link.png")
    tifffile.imwrite(d / "scan002", grain_image(40, 40))
    (d / "notes").write_text("stage at 12 mm")
    images, skipped = inference.scan_images(str(d))
    assert images == [str(d / "A.png")]
    kinds = {os.path.basename(e["file"]): (e["kind"], e.get("content")) for e in skipped}
    assert kinds == {"b_link.png": ("duplicate", None), "scan002": ("suffix", "TIFF"), "notes": ("suffix", None)}
    logged: list[str] = []
    manifest = batch.predict_folder(FakeModel(), str(d), str(tmp_path / "out"), log=logged.append)
    assert set(manifest["images"]) == {"A"}
    line = next(x for x in logged if "not read from" in x)
    assert "b_link.png (the same file as A.png, measured once)" in line
    assert "scan002 (a TIFF without an image suffix" in line
    # A link that sorts before its target: the target is measured, under its own name.
    e = tmp_path / "e"
    save(e / "z.png", grain_image(40, 40))
    os.symlink("z.png", e / "a_latest.png")
    (e / "weld_notes").write_text("BM = base metal, HAZ = heat-affected zone")
    tifffile.imwrite(e / "scan.001", grain_image(40, 40))
    tifffile.imwrite(e / "photo.nef", grain_image(40, 40))  # a camera raw is a TIFF inside: not to be renamed
    images, skipped = inference.scan_images(str(e))
    assert images == [str(e / "z.png")]
    kinds = {os.path.basename(x["file"]): (x["kind"], x.get("content")) for x in skipped}
    assert kinds == {
        "a_latest.png": ("duplicate", None), "weld_notes": ("suffix", None), "scan.001": ("suffix", "TIFF"),
        "photo.nef": ("suffix", None),
    }
    assert image_files.format_by_content(e / "weld_notes") is None
    Image.fromarray(grain_image(8, 8)).save(e / "real.bmp")
    assert image_files.format_by_content(e / "real.bmp") == "BMP"
    only = tmp_path / "only"
    only.mkdir()
    tifffile.imwrite(only / "scan003", grain_image(40, 40))
    with pytest.raises(ValueError, match=r"no images .* \(scan003 is a TIFF without an image suffix: add one\)"):
        inference.scan_images(str(only))


def test_a_measured_image_keeps_its_name_when_a_file_of_the_same_stem_joins_it(tmp_path: Path) -> None:
    d, out = tmp_path / "in", tmp_path / "out"
    save(d / "x.png", grain_image(40, 40))
    batch.predict_folder(FakeModel(), str(d), str(out))
    Image.fromarray(grain_image(32, 48)).save(d / "x.tif")
    manifest = batch.predict_folder(FakeModel(), str(d), str(out))
    assert set(manifest["images"]) == {"x", "x_tif"}  # x.png replaced its own results: not counted twice
    assert manifest["images"]["x"]["file"] == str(d / "x.png")
    assert manifest["images"]["x_tif"]["file"] == str(d / "x.tif")
    rows = (out / "grain_sizes_summary.csv").read_text().strip().splitlines()
    assert len(rows) == 3  # header + one row per file


def test_an_image_given_by_relative_paths_from_two_folders_is_one_image(tmp_path: Path, monkeypatch) -> None:
    save(tmp_path / "in" / "x.png", grain_image(40, 40))
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    batch.predict_folder(FakeModel(), "in", str(out))
    Image.fromarray(grain_image(32, 48)).save(tmp_path / "in" / "x.tif")
    monkeypatch.chdir(tmp_path / "in")
    manifest = batch.predict_folder(FakeModel(), ".", str(out))
    assert set(manifest["images"]) == {"x", "x_tif"}
    assert manifest["images"]["x"]["real_file"] == os.path.realpath(tmp_path / "in" / "x.png")


def test_exclude_border_grains_says_which_grains_each_number_covers(tmp_path: Path) -> None:
    save(tmp_path / "in" / "m.png", grain_image(64, 64))
    manifest = batch.predict_folder(FakeModel(), str(tmp_path / "in"), str(tmp_path / "out"), exclude_border=True)
    entry = manifest["images"]["m"]
    table = (tmp_path / "out" / "m_grains.csv").read_text().strip().splitlines()[1:]
    assert entry["table_excludes_border_grains"] and entry["table_grains"] == len(table) < entry["n_grains"]
    assert html.escape(report.EXCLUDED_BORDER_NOTE) in (tmp_path / "out" / "report.html").read_text()
    plain = batch.predict_folder(FakeModel(), str(tmp_path / "in"), str(tmp_path / "o2"))["images"]["m"]
    assert "table_excludes_border_grains" not in plain
    assert html.escape(report.EXCLUDED_BORDER_NOTE) not in (tmp_path / "o2" / "report.html").read_text()


def test_the_histogram_mean_is_that_of_the_grains_it_shows(monkeypatch) -> None:
    drawn = []
    from matplotlib.axes import Axes

    monkeypatch.setattr(Axes, "axvline", lambda self, x, **kw: drawn.append(x))
    rows = [{"equivalent_diameter_px": v, "equivalent_diameter_um": None} for v in (10.0, 20.0, 30.0)]
    report.histogram_png(rows, {"mean_equivalent_diameter_px": 12.0}, "t")
    report.histogram_png(
        rows, {"mean_equivalent_diameter_px": 12.0, "table_excludes_border_grains": True}, "t"
    )
    assert drawn == [12.0, 20.0]


def test_one_grain_far_larger_than_the_rest_is_noted_not_hidden() -> None:
    boundary = np.zeros((400, 400), bool)
    boundary[::20] = boundary[:, ::20] = True
    lab = grains_lib.grains_from_boundary(boundary)
    assert grains_lib.grain_size_plausibility(lab, boundary) == ([], [])
    boundary[:, 241:] = False  # the right 40 %: resin, one flat region
    lab = grains_lib.grains_from_boundary(boundary)
    withhold, notes = grains_lib.grain_size_plausibility(lab, boundary)
    assert withhold == [] and len(notes) == 1
    assert notes[0].startswith("one grain covers 40% of the image") and "boundaries missed" in notes[0]
    summary = grains_lib.grain_size_summary(lab, 0.5, boundary=boundary)
    assert summary["astm_G"] is not None and notes[0] in summary["warnings"]


def test_the_e112_minimum_counts_edge_grains_as_halves() -> None:
    boundary = np.zeros((60, 60), bool)
    boundary[::6] = boundary[:, ::6] = True  # 10 x 10 cells: 64 inside, 36 cut by the edge -> 82 by E112
    lab = grains_lib.grains_from_boundary(boundary)
    assert grains_lib.grain_size_plausibility(lab, boundary) == ([], [])
    boundary = boundary[:42, :42]  # 7 x 7 cells: 25 inside, 24 cut by the edge -> 37 by E112 (49 in all)
    _, notes = grains_lib.grain_size_plausibility(grains_lib.grains_from_boundary(boundary), boundary)
    assert notes == ["37 grains counted (E112's count, edge grains as halves): ASTM E112 asks for >= 50 per "
                     "field, G is uncertain"]


def test_path_flags_refuse_empty_and_expand_the_home_folder(monkeypatch) -> None:
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "Output folder.", flag_values=fv)
    flags.DEFINE_string("images", None, "", flag_values=fv)
    fv(["prog", "--out=", "--images=x"])
    assert console.check_path_flags(fv) == "--out is empty; it takes: Output folder"  # the flag's own help
    fv(["prog", "--out=x", "--images="])
    assert console.check_path_flags(fv) == "--images is empty: give a file or folder path"  # no help
    monkeypatch.setenv("HOME", "/home/lab")
    fv(["prog", "--out=~/results", "--images=~"])
    assert console.check_path_flags(fv) is None
    assert (fv["out"].value, fv["images"].value) == ("/home/lab/results", "/home/lab")


def test_predict_exits_2_on_an_empty_out(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "fedtransfer_jax.predict", "--images=in", "--out="],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert run.returncode == predict.EXIT_USAGE
    assert run.stderr.strip().splitlines()[-1] == "predict: error: --out is empty; it takes: Output folder (not inside --images)"
    assert os.listdir(tmp_path) == []


def test_a_label_named_in_another_case_is_pointed_out(tmp_path: Path) -> None:
    from fedtransfer_jax.data import folder

    save(tmp_path / "lab" / "images" / "C1.PNG", grain_image(16, 16))
    save(tmp_path / "lab" / "labels" / "c1.png", grain_image(16, 16))
    with pytest.raises(FileNotFoundError, match=r"labels/c1\.png is there: names must match in case"):
        folder.list_pairs(tmp_path / "lab")


def test_launch_refuses_an_empty_workdir(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, str(root / "launch.py"), "--config", str(root / "experiments" / "grains.py") + ":tiny",
         "--workdir="],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "error: --workdir is empty; it takes: Output directory (default: runs/<config.name>); leave the flag "
        "out for the default"
    )
    assert os.listdir(tmp_path) == []


def test_a_label_with_no_boundary_or_all_boundary_is_left_out_of_the_scores(tmp_path: Path) -> None:
    from fedtransfer_jax import evaluate

    d = tmp_path / "d"
    label = (grain_image(40, 40, 10) < 128).astype(np.uint8) * 255
    for name, lab in (("good", label), ("blank", np.zeros_like(label)), ("full", np.full_like(label, 255))):
        save(d / "images" / f"{name}.png", grain_image(40, 40, 10))
        save(d / "labels" / f"{name}.png", lab)
    with pytest.warns(Warning):
        result = evaluate.evaluate_folder(FakeModel(), str(d))
    assert set(result["per_image"]) == {"good.png"} and result["n_images"] == 1
    assert "has no boundary pixel" in result["not_scored"]["blank.png"]
    assert "boundary everywhere" in result["not_scored"]["full.png"]
    assert result["mean"]["ari"] == result["per_image"]["good.png"]["ari"]
    with pytest.raises(ValueError, match="--group_regex 'Test' has no group"):
        evaluate.evaluate_folder(FakeModel(), str(d), group_regex="Test")


def test_a_jpeg_label_and_outputs_inside_the_data_are_pointed_out(tmp_path: Path) -> None:
    from fedtransfer_jax import calibrate, evaluate
    from fedtransfer_jax.data import folder

    d = tmp_path / "lab"
    save(d / "images" / "m.png", grain_image(16, 16))
    (d / "labels").mkdir()
    Image.fromarray(grain_image(16, 16)).save(d / "labels" / "m.jpg")
    with pytest.raises(FileNotFoundError, match=r"m\.jpg is there: labels must be PNG or TIFF"):
        folder.list_pairs(d)
    with pytest.raises(ValueError, match=r"is a folder: name a file, e\.g\. .*lab_evaluate\.json"):
        evaluate.check_out(str(d), str(d))
    values = {"tolerance": 2.0, "dest": str(d / "images" / "my_model"), "data_dir": str(d), "scale": "auto"}
    with pytest.raises(ValueError, match="--dest .* is inside --data_dir"):
        calibrate.run(values)
