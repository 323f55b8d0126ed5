"""Catalogue of what a materials researcher gets wrong first, through the public entry points.

Every case asserts that the message names the file or the config key / flag that fixes it, and that
nothing partial is left behind (no output folder for refused runs, no half-written or temp files).
Models are fakes with ``LoadedModel``'s interface or never reached: nothing here trains.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
import tifffile
from PIL import Image

from fedtransfer_jax import evaluate, predict
from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.data import folder, load_federated_data
from fedtransfer_jax.metrics import postprocess_select as pps

REPO = Path(__file__).resolve().parents[1]
NO_SETTINGS = {k: None for k in pps.SETTING_KEYS}


# ----------------------------------------------------------------------------------------------
# Fixtures and helpers.
# ----------------------------------------------------------------------------------------------


class FakeModel:
    """Boundary probability = 1 - brightness."""

    def __init__(self, tag: str = "fedavg", tile: int = 16):
        self.tag, self.tile = tag, tile
        self.config = ml_collections.ConfigDict({"eval": {"threshold": 0.5}})

    def predict_prob(self, image: np.ndarray, *, overlap=None, flips=False) -> np.ndarray:
        return 1.0 - image.mean(axis=-1)


def grid(h: int = 24, w: int = 24, every: int = 8) -> np.ndarray:
    """0/1 boundary grid (~23 % boundary at every=8)."""
    lab = np.zeros((h, w), np.uint8)
    lab[::every] = 1
    lab[:, ::every] = 1
    return lab


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, arr)
    else:
        Image.fromarray(arr).save(path)
    return path


def labelled(root: Path, n: int = 3, label=None) -> Path:
    """``root/images`` + ``root/labels``: n micrographs (dark lines on light grains) and their labels."""
    for i in range(n):
        save(root / "images" / f"img_{i}.png", (230 - 200 * grid()).astype(np.uint8))
        save(root / "labels" / f"img_{i}.png", grid() * 255 if label is None else label)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def folder_cfg(root: Path, tmp_path: Path, **kw) -> ml_collections.ConfigDict:
    cfg = dict(
        source="folder",
        dir=str(root),
        clients=(),
        unseen_clients=(),
        tile_size=8,
        tile_overlap=0,
        test_fraction=0.34,
        seed=0,
        tfds_dir=str(tmp_path / "tfds"),
    )
    cfg.update(kw)
    return ml_collections.ConfigDict(cfg)


def predict_values(images, out, workdir, **kw) -> dict:
    values = dict(
        workdir=str(workdir),
        method="fedavg",
        client=None,
        images=str(images),
        out=str(out),
        overlap=None,
        flips=False,
        pixel_size_um=0.0,
        exclude_border=False,
        settings=dict(NO_SETTINGS),
    )
    values.update(kw)
    return values


def evaluate_values(data_dir, workdir, **kw) -> dict:
    values = dict(
        workdir=str(workdir),
        method="fedavg",
        client=None,
        data_dir=str(data_dir),
        invert_labels=False,
        tolerance=2.0,
        overlap=None,
        flips=False,
        settings=dict(NO_SETTINGS),
    )
    values.update(kw)
    return values


@pytest.fixture
def fake_load(monkeypatch):
    """``inference.load_model`` returns a fake: for cases that get past the model load."""
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: FakeModel(tag=m))


@pytest.fixture(scope="module")
def workdir_with_config(tmp_path_factory) -> Path:
    """A workdir with the `:tiny` config and an empty checkpoint folder for fedavg (never trained)."""
    spec = importlib.util.spec_from_file_location("grains_config", REPO / "experiments" / "grains.py")
    grains = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grains)
    workdir = tmp_path_factory.mktemp("workdir")
    io_utils.write_json_atomic(
        str(workdir / "config.json"), io_utils.config_to_json(grains.get_config("tiny"))
    )
    (workdir / "checkpoints" / "fedavg").mkdir(parents=True)
    (workdir / "checkpoints" / "local" / "brightfield").mkdir(parents=True)
    return workdir


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    for stem in ("a", "b"):
        save(d / f"{stem}.png", (230 - 200 * grid()).astype(np.uint8))
    return d


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repo root, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


# ----------------------------------------------------------------------------------------------
# Labelled folders (folder reader, tfds builder, evaluate --data_dir).
# ----------------------------------------------------------------------------------------------


def test_missing_label_names_image_and_expected_label(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    (root / "labels" / "img_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/img_1\.png.*labels/img_1\.png"):
        folder.list_pairs(root)


def test_missing_labels_folder_is_named(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    for p in (root / "labels").iterdir():
        p.unlink()
    (root / "labels").rmdir()
    with pytest.raises(FileNotFoundError, match=r"c/labels"):
        folder.list_pairs(root)


def test_label_of_another_size_names_both_files(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    save(root / "labels" / "img_2.png", grid(24, 20) * 255)
    with pytest.raises(ValueError, match=r"img_2\.png is 24x24.*labels/img_2\.png is 24x20"):
        load_federated_data(folder_cfg(root, tmp_path), tmp_path / "work")
    assert not list((tmp_path / "tfds").rglob("*.array_record"))


def test_corrupt_png_image_is_named(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    (root / "images" / "img_0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ValueError, match=r"cannot read image file .*img_0\.png"):
        load_federated_data(folder_cfg(root, tmp_path), tmp_path / "work")
    assert not list((tmp_path / "tfds").rglob("*.array_record"))


def test_corrupt_label_is_named(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    (root / "labels" / "img_1.png").write_bytes(b"GIF89a nonsense")
    with pytest.raises(ValueError, match=r"cannot read image file .*labels/img_1\.png"):
        folder.check_client_labels(
            folder.list_pairs(root), invert=False, invert_flag="--invert_labels", where="c"
        )


def test_empty_image_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "c" / "images").mkdir(parents=True)
    (tmp_path / "c" / "labels").mkdir()
    with pytest.raises(ValueError, match=r"c/images"):
        folder.list_pairs(tmp_path / "c")


def test_non_image_file_in_images_is_ignored_by_the_reader(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    (root / "images" / "notes.txt").write_text("etched 10 s in nital")
    (root / "images" / "._img_0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    assert [p[0].name for p in folder.list_pairs(root)] == ["img_0.png", "img_1.png", "img_2.png"]


def test_two_images_with_one_stem_are_named(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    save(root / "images" / "img_0.tif", (230 - 200 * grid()).astype(np.uint8))
    with pytest.raises(ValueError, match=r"share the stem 'img_0'.*img_0\.png.*img_0\.tif"):
        folder.list_pairs(root)


def test_16bit_tiff_label_is_read_at_half_range(tmp_path: Path) -> None:
    path = save(tmp_path / "l.tif", grid().astype(np.uint16) * 65535)
    np.testing.assert_array_equal(folder.read_label(path), grid())


def test_16bit_tiff_label_with_8bit_values_is_explained(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    for i in range(3):
        (root / "labels" / f"img_{i}.png").unlink()
        save(root / "labels" / f"img_{i}.tif", grid().astype(np.uint16) * 255)
    with pytest.raises(folder.LabelError, match=r"img_0\.tif.*values go up to 255 of 65535"):
        load_federated_data(folder_cfg(root, tmp_path), tmp_path / "work")


def test_rgb_label_drawn_in_red_is_accepted(tmp_path: Path) -> None:
    red = np.zeros((24, 24, 3), np.uint8)
    red[..., 0] = grid() * 255
    np.testing.assert_array_equal(folder.read_label(save(tmp_path / "r.png", red)), grid())


def test_rgb_overlay_in_labels_is_an_error(tmp_path: Path) -> None:
    rng = np.random.default_rng([0])
    overlay = rng.integers(60, 200, (24, 24, 3), dtype=np.uint8)  # a micrograph with lines drawn on it
    overlay[grid() > 0] = (255, 0, 0)
    root = labelled(tmp_path / "c", label=overlay)
    with pytest.raises(folder.LabelError, match=r"not binary masks.*img_0\.png"):
        evaluate.evaluate_folder(FakeModel(), str(root))


def test_grey_label_0_to_255_is_an_error_in_evaluate(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (24, 1))
    root = labelled(tmp_path / "c", label=ramp)
    with pytest.raises(folder.LabelError, match=r"img_0\.png.*black \(0\).*white \(255\)"):
        evaluate.run(evaluate_values(root, tmp_path / "no_workdir"))  # fails before any model load


def test_a_damaged_image_stops_evaluate_before_any_prediction(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    (root / "images" / "img_1.png").write_bytes((root / "images" / "img_1.png").read_bytes()[:60])  # cut short
    with pytest.raises(ValueError, match=r"cannot read image file .*img_1\.png"):
        evaluate.run(evaluate_values(root, tmp_path / "no_workdir"))  # fails before any model load


def test_inverted_labels_name_the_flag_in_evaluate_cli(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c", label=(1 - grid()) * 255)
    proc = run_cli("fedtransfer_jax.evaluate", "--workdir", str(tmp_path / "wd"), "--data_dir", str(root))
    assert proc.returncode == evaluate.EXIT_USAGE
    assert "look inverted" in proc.stderr and "--invert_labels=True" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_inverted_labels_name_the_config_key_in_training(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c", label=(1 - grid()) * 255)
    with pytest.raises(folder.LabelError, match=r"--config\.data\.invert_labels=True"):
        load_federated_data(folder_cfg(root, tmp_path), tmp_path / "work")


def test_all_zero_labels_are_an_error(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c", label=np.zeros((24, 24), np.uint8))
    with pytest.raises(folder.LabelError, match=r"every label .* empty.*img_0\.png"):
        evaluate.evaluate_folder(FakeModel(), str(root))


def test_unknown_client_folder_lists_the_known_ones(tmp_path: Path) -> None:
    labelled(tmp_path / "data" / "lab1")
    labelled(tmp_path / "data" / "lab2")
    with pytest.raises(ValueError, match=r"'lab3'.*\['lab1', 'lab2'\]"):
        load_federated_data(folder_cfg(tmp_path / "data", tmp_path, clients=("lab3",)), tmp_path / "work")


def test_nonexistent_data_dir_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        load_federated_data(folder_cfg(tmp_path / "nowhere", tmp_path), tmp_path / "work")
    with pytest.raises(FileNotFoundError, match=r"nowhere"):
        evaluate.run(evaluate_values(tmp_path / "nowhere", tmp_path))


def test_val_fraction_out_of_range_names_the_key(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    with pytest.raises(ValueError, match=r"data\.val_fraction must be in \[0, 1\)"):
        load_federated_data(folder_cfg(root, tmp_path, val_fraction=1.0), tmp_path / "work")


def test_val_fraction_without_enough_images_names_the_key(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c", n=2)  # 1 train + 1 test image: nothing left to hold out
    with pytest.raises(ValueError, match=r"data\.val_fraction=0\.5.*client 'c'"):
        load_federated_data(
            folder_cfg(root, tmp_path, test_fraction=0.5, val_fraction=0.5), tmp_path / "work"
        )


def test_negative_val_per_client_names_the_key(tmp_path: Path) -> None:
    cfg = ml_collections.ConfigDict(
        dict(source="synthetic", clients=("sem",), val_per_client=-1, tfds_dir=str(tmp_path / "tfds"))
    )
    with pytest.raises(ValueError, match=r"data\.val_per_client"):
        load_federated_data(cfg, tmp_path / "work")


# ----------------------------------------------------------------------------------------------
# predict.
# ----------------------------------------------------------------------------------------------


def test_predict_out_equal_to_images_is_refused_by_the_cli(images: Path) -> None:
    before = snapshot(images)
    proc = run_cli(
        "fedtransfer_jax.predict", "--workdir", "/nonexistent", "--images", str(images), "--out", str(images)
    )
    assert proc.returncode == predict.EXIT_USAGE
    assert "--out" in proc.stderr and str(images) in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(images) == before


def test_predict_out_inside_images_is_refused(images: Path, tmp_path: Path) -> None:
    with pytest.raises(
        predict.UnsafeOutputError, match=r"--out .*in/maps is the --images folder .* or inside it"
    ):
        predict.run(predict_values(images, images / "maps", tmp_path))
    assert not (images / "maps").exists()


def test_predict_stem_collision_writes_both(images: Path, tmp_path: Path, fake_load) -> None:
    Image.fromarray((230 - 200 * grid(16, 32)).astype(np.uint8)).save(images / "a.tif")
    assert predict.run(predict_values(images, tmp_path / "out", tmp_path)) == predict.EXIT_OK
    manifest = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert {k: v["file"] for k, v in manifest["images"].items()} == {
        "a_png": str(images / "a.png"),
        "a_tif": str(images / "a.tif"),
        "b": str(images / "b.png"),
    }


def test_predict_corrupt_image_in_batch(images: Path, tmp_path: Path, fake_load, capsys) -> None:
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert predict.run(predict_values(images, tmp_path / "out", tmp_path)) == predict.EXIT_SOME_FAILED
    assert "c.png" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert [f["file"] for f in manifest["failed"]] == [str(images / "c.png")]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [f"{n}{f}" for n in "ab" for f in (".png", "_grains.csv", "_overlay.png", "_hist.png")]
        + ["grain_sizes.json", "grain_sizes.csv", "grain_sizes_summary.csv", "report.html"]
    )


def test_predict_non_image_file_is_listed_as_skipped(images: Path, tmp_path: Path, fake_load) -> None:
    (images / "settings.xml").write_text("<microscope/>")
    assert predict.run(predict_values(images, tmp_path / "out", tmp_path)) == predict.EXIT_OK
    manifest = json.loads((tmp_path / "out" / "grain_sizes.json").read_text())
    assert [s["file"] for s in manifest["skipped"]] == [str(images / "settings.xml")]


def test_predict_empty_image_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"--images .*empty: no images"):
        predict.run(predict_values(tmp_path / "empty", tmp_path / "out", tmp_path))
    assert not (tmp_path / "out").exists()


def test_predict_missing_images_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"--images .*missing"):
        predict.run(predict_values(tmp_path / "missing", tmp_path / "out", tmp_path))
    assert not (tmp_path / "out").exists()


def test_predict_foreign_file_in_out_is_not_overwritten(images: Path, tmp_path: Path, fake_load) -> None:
    mine = tmp_path / "out" / "b_grains.csv"
    mine.parent.mkdir()
    mine.write_text("grain,area\n1,120\n")  # the user's own measurements, named like an output
    before = mine.read_bytes()
    with pytest.raises(
        predict.UnsafeOutputError, match=r"b_grains\.csv exists and was not written by predict"
    ):
        predict.run(predict_values(images, tmp_path / "out", tmp_path))
    assert mine.read_bytes() == before and os.listdir(tmp_path / "out") == ["b_grains.csv"]


def test_workdir_without_config_is_named(images: Path, tmp_path: Path) -> None:
    (tmp_path / "wd").mkdir()
    with pytest.raises(FileNotFoundError, match=r"wd/config\.json not found"):
        predict.run(predict_values(images, tmp_path / "out", tmp_path / "wd"))
    assert not (tmp_path / "out").exists()


def test_workdir_without_config_exit_status_by_cli(images: Path, tmp_path: Path) -> None:
    (tmp_path / "wd").mkdir()
    proc = run_cli(
        "fedtransfer_jax.predict",
        "--workdir",
        str(tmp_path / "wd"),
        "--method",
        "fedavg",
        "--images",
        str(images),
        "--out",
        str(tmp_path / "out"),
    )
    assert proc.returncode == predict.EXIT_USAGE and "config.json" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_unknown_method_lists_the_available_ones(
    images: Path, tmp_path: Path, workdir_with_config: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"'fedmagic'.*available: \['fedavg', 'local'\]"):
        predict.run(predict_values(images, tmp_path / "out", workdir_with_config, method="fedmagic"))
    assert not (tmp_path / "out").exists()


def test_method_without_checkpoint_is_named(images: Path, tmp_path: Path, workdir_with_config: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoints/fedavg"):
        predict.run(predict_values(images, tmp_path / "out", workdir_with_config))
    assert not (tmp_path / "out").exists()


def test_local_method_without_client_names_the_flag(
    images: Path, tmp_path: Path, workdir_with_config: Path
) -> None:
    with pytest.raises(ValueError, match=r"--client.*brightfield"):
        predict.run(predict_values(images, tmp_path / "out", workdir_with_config, method="local"))


def test_negative_pixel_size_is_named(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--pixel_size_um must be a pixel size in micrometres.*-0\.5"):
        predict.run(predict_values(images, tmp_path / "out", tmp_path, pixel_size_um=-0.5))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan")])
def test_threshold_outside_unit_interval_is_named(images: Path, tmp_path: Path, threshold: float) -> None:
    with pytest.raises(ValueError, match=r"--threshold.*\[0, 1\]"):
        predict.run(
            predict_values(
                images, tmp_path / "out", tmp_path, settings={**NO_SETTINGS, "threshold": threshold}
            )
        )
    with pytest.raises(ValueError, match=r"--threshold"):
        evaluate.run(evaluate_values(tmp_path, tmp_path, settings={**NO_SETTINGS, "threshold": threshold}))
    assert not (tmp_path / "out").exists()


def test_negative_close_radius_is_named(images: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--close_radius\) must be an integer >= 0, got -1"):
        predict.run(
            predict_values(images, tmp_path / "out", tmp_path, settings={**NO_SETTINGS, "close_radius": -1})
        )


def test_overlap_not_below_the_tile_is_named(images: Path, tmp_path: Path, fake_load) -> None:
    with pytest.raises(ValueError, match=r"--overlap must be in \[0, 16\)"):
        predict.run(predict_values(images, tmp_path / "out", tmp_path, overlap=16))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tolerance", [-1.0, 100.0, float("nan")])
def test_a_tolerance_that_scores_nothing_is_named(tmp_path: Path, tolerance: float) -> None:
    # Wider than 20 px, a map of nothing but boundary scores F1 1.0, like a perfect one.
    root = labelled(tmp_path / "c")
    with pytest.raises(ValueError, match=r"--tolerance must be between 0 and 20 px"):
        evaluate.run(evaluate_values(root, tmp_path, tolerance=tolerance))


def test_evaluate_out_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    root = labelled(tmp_path / "c")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    summary = tmp_path / "summary.json"
    summary.write_text('{"status": "complete"}')  # a run's own file, JSON but not an evaluate result
    for out, why in ((notes, "not an earlier evaluate"), (summary, "not an earlier evaluate"),
                     (root / "labels" / "img_0.png", "inside --data_dir"), (root / "results.json", "inside --data_dir")):
        with pytest.raises(ValueError, match=why):
            evaluate.run(evaluate_values(root, tmp_path, out=str(out)))
    assert notes.read_text() == "my notes" and summary.read_text() == '{"status": "complete"}'
    earlier = tmp_path / "evaluate.json"
    earlier.write_text('{"per_image": {}, "n_images": 0, "mean": {}}')
    evaluate.check_out(str(earlier), str(root))  # an earlier result may be replaced


def test_corrupt_postprocess_choice_is_named(images: Path, tmp_path: Path, fake_load) -> None:
    (tmp_path / "wd" / "postprocess").mkdir(parents=True)
    (tmp_path / "wd" / "postprocess" / "fedavg.json").write_text('{"settings": {"threshold": 7}}')
    with pytest.raises(ValueError, match=r"postprocess/fedavg\.json is not a valid post-processing choice"):
        predict.run(predict_values(images, tmp_path / "out", tmp_path / "wd"))
    assert not (tmp_path / "out").exists() and not temp_files(tmp_path)
