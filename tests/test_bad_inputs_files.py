"""Files and command lines a lab really produces that predict used to get wrong (third catalogue).

TIFFs as microscope software and Fiji write them (stacks, a thumbnail page first, planar RGB, white-is-zero
grey, palette colours, LZW/JPEG compression), file names from another system's encoding, a shell pattern
given to --images, a run where every image fails, and output folders created several levels deep. Each case
asserts what the user sees (the image as a viewer shows it, or one message naming the file or flag, exit
status 2) and that nothing is left behind. Tiny images; the model is a fake; nothing trains.
"""

from __future__ import annotations

import io
import json
import logging as std_logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from fedtransfer_jax import predict
from fedtransfer_jax.analysis import outputs, report
from fedtransfer_jax.data import image_files, labels
from fedtransfer_jax.runtime import console
from test_bad_inputs import REPO, fake_load, grid, predict_values, run_cli, save  # noqa: F401 (fixture)


def micrograph(h: int = 24, w: int = 40) -> np.ndarray:
    """Grey values that differ in every row and column (any transpose or flip shows)."""
    y, x = np.mgrid[:h, :w]
    return (10 + 3 * x + 2 * y).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# TIFF pages and photometric interpretations.
# ----------------------------------------------------------------------------------------------


def test_imagej_stack_is_refused_naming_the_file_not_read_as_colour(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([micrograph(), 255 - micrograph(), micrograph() // 2]), imagej=True)
    for read in (image_files.read_image, image_files.upright_shape):
        with pytest.raises(ValueError, match=r"stack\.tif is a stack of 3 images of 24x40 px"):
            read(path)


def test_two_full_size_pages_are_a_stack(tmp_path: Path) -> None:
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(micrograph())
        tif.write(micrograph())
    with pytest.raises(ValueError, match="stack of 2 images"):
        image_files.read_image(path)


@pytest.mark.parametrize("thumbnail_first", [True, False])
def test_the_full_resolution_page_is_read_not_the_thumbnail(tmp_path: Path, thumbnail_first: bool) -> None:
    path, full = tmp_path / "with_thumb.tif", micrograph(48, 80)
    with tifffile.TiffWriter(path) as tif:
        if thumbnail_first:  # some software writes the preview first, without the reduced-resolution flag
            tif.write(full[::4, ::4])
            tif.write(full)
        else:
            tif.write(full)
            tif.write(full[::4, ::4], subfiletype=1)
    np.testing.assert_allclose(image_files.read_image(path)[..., 0], full / 255.0, atol=1e-6)
    assert image_files.upright_shape(path)[:2] == (48, 80)


def test_planar_rgb_tiff_reads_channel_last(tmp_path: Path) -> None:
    rgb = np.stack([micrograph(), 255 - micrograph(), micrograph() // 2], axis=-1)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    np.testing.assert_allclose(image_files.read_image(path), rgb / 255.0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_white_is_zero_tiff_reads_as_a_viewer_shows_it(tmp_path: Path, dtype) -> None:
    shown = micrograph().astype(dtype) * (257 if dtype == np.uint16 else 1)
    full = np.iinfo(dtype).max
    path = tmp_path / "miniswhite.tif"
    tifffile.imwrite(path, (full - shown).astype(dtype), photometric="miniswhite")
    np.testing.assert_allclose(image_files.read_image(path)[..., 0], shown / full, atol=1e-6)


def test_palette_tiff_reads_its_colours_not_its_indices(tmp_path: Path) -> None:
    index = micrograph()
    colours = np.zeros((3, 256), np.uint16)
    colours[0] = np.arange(256)[::-1] * 257  # red falls as the index rises, green rises, blue constant
    colours[1] = np.arange(256) * 257
    colours[2] = 100 * 257
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, index, photometric="palette", colormap=colours)
    expected = np.stack([255 - index, index, np.full_like(index, 100)], axis=-1) / 255.0
    np.testing.assert_allclose(image_files.read_image(path), expected, atol=1e-6)


@pytest.mark.parametrize("compression", ["tiff_lzw", "tiff_adobe_deflate", "jpeg"])
def test_compressed_tiffs_from_other_software_are_read(tmp_path: Path, compression: str) -> None:
    rgb = np.stack([micrograph(32, 32)] * 3, axis=-1)
    path = tmp_path / f"{compression}.tif"
    Image.fromarray(rgb).save(path, compression=compression)
    atol = 6 / 255 if compression == "jpeg" else 1e-6
    np.testing.assert_allclose(image_files.read_image(path), rgb / 255.0, atol=atol)


def test_a_missing_codec_names_the_file_and_the_package(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "lzw.tif"
    Image.fromarray(micrograph()).save(path, compression="tiff_lzw")

    def no_codec(self, *a, **kw):  # what tifffile raises without the `imagecodecs` package
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_codec)
    with pytest.raises(ValueError, match=r"lzw\.tif.*pip install imagecodecs"):
        image_files.read_image(path)


def test_pages_of_another_type_or_a_transparency_mask_are_not_a_stack(tmp_path: Path) -> None:
    other_type, with_mask = tmp_path / "other_type.tif", tmp_path / "with_mask.tif"
    with tifffile.TiffWriter(other_type) as tif:
        tif.write(micrograph())
        tif.write(micrograph().astype(np.float32))
    with tifffile.TiffWriter(with_mask) as tif:
        tif.write(micrograph())
        tif.write(np.ones(micrograph().shape, bool), subfiletype=4)
    for path in (other_type, with_mask):
        np.testing.assert_allclose(image_files.read_image(path)[..., 0], micrograph() / 255.0, atol=1e-6)


def test_an_imagej_lookup_table_is_display_only(tmp_path: Path) -> None:
    green = np.zeros((3, 256), np.uint8)
    green[1] = np.arange(256)
    path = tmp_path / "green_lut.tif"
    tifffile.imwrite(path, micrograph(), imagej=True, colormap=green)
    np.testing.assert_allclose(image_files.read_image(path), np.stack([micrograph() / 255.0] * 3, -1), atol=1e-6)


def _mask() -> np.ndarray:
    return grid(24, 40).astype(bool)


def test_a_bool_tiff_label_keeps_its_values(tmp_path: Path) -> None:
    """tifffile saves a bool mask as white-is-zero: the mask's True is the boundary, not what a viewer
    shows as white."""
    path = tmp_path / "label.tif"
    tifffile.imwrite(path, _mask())
    label, _ = labels.read_label_with_stats(path)
    np.testing.assert_array_equal(label, _mask())
    tifffile.imwrite(path, (_mask() * 255).astype(np.uint8), photometric="miniswhite")
    np.testing.assert_array_equal(labels.read_label_with_stats(path)[0], _mask())


def test_a_palette_tiff_label_is_read_by_index_like_a_palette_png(tmp_path: Path) -> None:
    colours = np.zeros((3, 256), np.uint16)
    colours[:, 1] = (65535, 0, 0)  # boundary drawn in red on black, VOC style
    path = tmp_path / "label.tif"
    tifffile.imwrite(path, _mask().astype(np.uint8), photometric="palette", colormap=colours)
    np.testing.assert_array_equal(labels.read_label_with_stats(path)[0], _mask())


# ----------------------------------------------------------------------------------------------
# predict: names, failures, folders.
# ----------------------------------------------------------------------------------------------


def _folder(tmp_path: Path, names: list[bytes | str]) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for name in names:
        path = os.path.join(os.fsencode(d), os.fsencode(name))
        with open(path, "wb") as f:
            buf = io.BytesIO()
            Image.fromarray((230 - 200 * grid()).astype(np.uint8)).save(buf, format="PNG")
            f.write(buf.getvalue())
    return d


def test_a_file_name_in_another_encoding_is_predicted_like_any_other(tmp_path: Path, fake_load, capsys) -> None:
    try:
        images = _folder(tmp_path, [b"caf\xe9.png", b"plain.png"])  # Latin-1 'café', as unzipped from Windows
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    out = tmp_path / "out"
    assert predict.run(predict_values(images, out, tmp_path, scale=1.0)) == predict.EXIT_OK
    written = set(os.listdir(os.fsencode(out)))
    assert {b"caf\xe9.png", b"caf\xe9_hist.png", b"plain.png"} <= written
    assert b"caf%E9_overlay.png" in (out / "report.html").read_bytes()  # the link names the file on disk
    manifest = json.loads((out / "grain_sizes.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["images"]) == 2


def test_a_stream_that_cannot_encode_a_name_escapes_it(monkeypatch) -> None:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", stream)
    console.tolerant_streams()
    print("caf\udce9: 63 grains")
    stream.flush()
    assert stream.buffer.getvalue() == b"caf\\udce9: 63 grains\n"


def test_an_unexpected_error_in_one_image_fails_that_image_only(
    tmp_path: Path, fake_load, monkeypatch, capsys
) -> None:
    images = _folder(tmp_path, ["a.png", "b.png"])
    real = report.histogram_png

    def broken_for_a(rows, summary, title):
        if title == "a":
            raise TypeError("set_text(): incompatible function arguments")
        return real(rows, summary, title)

    monkeypatch.setattr(report, "histogram_png", broken_for_a)
    out = tmp_path / "out"
    assert predict.run(predict_values(images, out, tmp_path, scale=1.0)) == predict.EXIT_SOME_FAILED
    assert "unexpected TypeError" in capsys.readouterr().err
    manifest = json.loads((out / "grain_sizes.json").read_text())
    assert list(manifest["images"]) == ["b"] and manifest["failed"][0]["file"].endswith("a.png")
    assert not [n for n in os.listdir(out) if n.startswith("a")]  # none of a's four files is left


def test_every_image_failing_exits_2_and_leaves_no_output_folder(tmp_path: Path, fake_load, capsys) -> None:
    images = tmp_path / "in"
    images.mkdir()
    (images / "zero.png").write_bytes(b"")
    (images / "half.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "new" / "out"
    assert predict.run(predict_values(images, out, tmp_path, scale=1.0)) == predict.EXIT_USAGE
    err = capsys.readouterr().err
    assert "zero.png" in err and "half.jpg" in err and "none of the 2 image(s) could be measured" in err
    assert not (tmp_path / "new").exists()


def test_every_image_failing_into_an_earlier_out_keeps_its_results(tmp_path: Path, fake_load, capsys) -> None:
    good = _folder(tmp_path, ["a.png"])
    out = tmp_path / "out"
    assert predict.run(predict_values(good, out, tmp_path, scale=1.0)) == predict.EXIT_OK
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.png").write_bytes(b"")
    assert predict.run(predict_values(bad, out, tmp_path, scale=1.0)) == predict.EXIT_USAGE
    manifest = json.loads((out / "grain_sizes.json").read_text())
    assert list(manifest["images"]) == ["a"] and (out / "a.png").exists()
    assert [f["file"] for f in manifest["failed"]] == [str(bad / "zero.png")]


def test_every_image_failing_keeps_an_earlier_runs_files_even_when_its_entry_is_gone(
    tmp_path: Path, fake_load
) -> None:
    good = _folder(tmp_path, ["a.png"])
    out = tmp_path / "out"
    assert predict.run(predict_values(good, out, tmp_path, scale=1.0)) == predict.EXIT_OK
    (out / "a_overlay.png").unlink()  # the user deletes one file: a's entry is no longer kept
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.png").write_bytes(b"")
    before = sorted(os.listdir(out))
    assert predict.run(predict_values(bad, out, tmp_path, scale=1.0)) == predict.EXIT_USAGE
    assert set(before) <= set(os.listdir(out))  # nothing an earlier run wrote is deleted


def test_an_image_that_fails_on_a_rerun_leaves_nothing_that_blocks_the_next_run(
    tmp_path: Path, fake_load, monkeypatch
) -> None:
    images = _folder(tmp_path, ["a.png", "b.png"])
    out = tmp_path / "out"
    assert predict.run(predict_values(images, out, tmp_path, scale=1.0)) == predict.EXIT_OK
    real = report.histogram_png
    monkeypatch.setattr(report, "histogram_png", lambda rows, summary, title: (
        (_ for _ in ()).throw(TypeError("boom")) if title == "a" else real(rows, summary, title)))
    assert predict.run(predict_values(images, out, tmp_path, scale=1.0)) == predict.EXIT_SOME_FAILED
    assert not [n for n in os.listdir(out) if n.startswith("a")]  # run 1's a_hist.png is gone too
    monkeypatch.setattr(report, "histogram_png", real)
    assert predict.run(predict_values(images, out, tmp_path, scale=1.0)) == predict.EXIT_OK


def test_the_lock_removes_the_parent_folders_it_created(tmp_path: Path) -> None:
    out = tmp_path / "new1" / "new2" / "out"
    with pytest.raises(RuntimeError), outputs.lock(str(out)):
        assert out.is_dir()
        raise RuntimeError("a bad flag found after the lock")
    assert not (tmp_path / "new1").exists()
    (tmp_path / "users_empty_folder").mkdir()
    with pytest.raises(RuntimeError), outputs.lock(str(tmp_path / "users_empty_folder" / "a" / "out")):
        raise RuntimeError("a bad flag found after the lock")
    assert (tmp_path / "users_empty_folder").is_dir() and not (tmp_path / "users_empty_folder" / "a").exists()


# ----------------------------------------------------------------------------------------------
# Command lines.
# ----------------------------------------------------------------------------------------------


def test_a_shell_pattern_given_to_images_exits_2_naming_the_extra_files(tmp_path: Path) -> None:
    for name in ("a.tif", "b.tif", "c.tif"):
        save(tmp_path / name, micrograph())
    r = run_cli("fedtransfer_jax.predict", "--images", str(tmp_path / "a.tif"), str(tmp_path / "b.tif"),
                str(tmp_path / "c.tif"), "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stderr
    assert "unexpected argument(s)" in r.stderr and "b.tif" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_launch_refuses_a_stray_argument(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "launch.py", "--config", "experiments/grains.py:tiny", "rounds=3",
         "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert r.returncode == 2 and "unexpected argument(s) rounds=3" in r.stderr
    assert not (tmp_path / "w").exists()


def test_our_console_warnings_read_as_a_sentence_and_the_log_keeps_the_details(tmp_path: Path) -> None:
    from absl import logging as absl_logging  # noqa: PLC0415

    handler = absl_logging.get_absl_handler()
    record = std_logging.LogRecord(
        "absl", std_logging.WARNING, os.path.join("x", "fedtransfer_jax", "runs", "engine.py"), 1,
        "config key %s is clamped", ("fl.clients_per_round",), None,
    )
    try:
        console.setup_logging(str(tmp_path), console_verbose=False)
        assert handler.format(record) == "warning: config key fl.clients_per_round is clamped"
        console.setup_logging(str(tmp_path), console_verbose=True)
        verbose = handler.format(record)
        assert verbose.startswith("W") and "engine.py:1]" in verbose  # absl's prefix when asked for
    finally:
        console.setup_logging(str(tmp_path), console_verbose=True, to_file=False)


@pytest.mark.parametrize("tool,flags_listed", [
    ("fedtransfer_jax.evaluate", ("--scale", "--threshold", "--min_grain_area", "--line_width")),
    ("fedtransfer_jax.calibrate", ("--scale",)),
])
def test_help_lists_the_flags_shared_with_predict(tool: str, flags_listed: tuple[str, ...]) -> None:
    r = run_cli(tool, "--help")
    listed = {line.split(":")[0].strip() for line in r.stdout.splitlines() if line.startswith("  --")}
    assert set(flags_listed) <= listed, (sorted(listed), r.stderr[-1000:])
