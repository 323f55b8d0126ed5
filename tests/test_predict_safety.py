"""predict never touches the user's files, names colliding outputs apart, survives bad images, writes
group-readable files; predict and evaluate agree on the grains and say which post-processing they used.

The model is a fake with ``LoadedModel``'s interface (boundary probability = darkness), so no training.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax import evaluate, predict
from fedtransfer_jax.runs import inference
from fedtransfer_jax.runtime import io_utils
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import postprocess_choice


class FakeModel:
    """Boundary probability = 1 - brightness, so dark lines drawn into an image are its boundaries."""

    def __init__(self, tag: str = "fedavg", tile: int = 16):
        self.tag, self.tile = tag, tile
        self.config = ml_collections.ConfigDict({"eval": {"threshold": 0.5}})

    def predict_prob(self, image: np.ndarray, *, overlap=None, flips=False) -> np.ndarray:
        return 1.0 - image.mean(axis=-1)


def grain_image(h: int = 24, w: int = 30, every: int = 8) -> np.ndarray:
    """White grains separated by dark 1-px lines (uint8 grey)."""
    img = np.full((h, w), 230, np.uint8)
    img[::every] = 20
    img[:, ::every] = 20
    return img


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content (to show that nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    save(d / "a.png", grain_image())
    save(d / "b.png", grain_image(20, 20, 5))
    return d


def test_out_equal_to_or_inside_images_is_refused(images: Path) -> None:
    before = tree(images)
    for out in (images, images / "results", images / "." / "x" / ".."):
        with pytest.raises(predict.UnsafeOutputError, match=r"--out .* inside"):
            predict.predict_folder(FakeModel(), str(images), str(out))
    assert tree(images) == before and not (images / "results").exists()
    # The same through a symlink to the images folder.
    link = images.parent / "link"
    link.symlink_to(images)
    with pytest.raises(predict.UnsafeOutputError, match="inside"):
        predict.predict_folder(FakeModel(), str(images), str(link / "out"))


def test_an_input_file_inside_out_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = save(out / "x.png", grain_image())
    before = src.read_bytes()
    with pytest.raises(predict.UnsafeOutputError, match=r"out/x\.png would overwrite the input image"):
        predict.predict_folder(FakeModel(), str(src), str(out))
    assert src.read_bytes() == before and sorted(os.listdir(out)) == ["x.png"]
    # A symlinked output name pointing at the input is caught as well (real paths are compared).
    other = save(tmp_path / "in" / "x.png", grain_image())
    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "x.png").symlink_to(other)
    with pytest.raises(predict.UnsafeOutputError, match="would overwrite the input image"):
        predict.predict_folder(FakeModel(), str(other), str(tmp_path / "out2"))
    # An input in OUT whose outputs have other names is fine.
    tif = out / "y.tif"
    Image.fromarray(grain_image()).save(tif)
    manifest = predict.predict_folder(FakeModel(), str(tif), str(out))
    assert manifest["images"]["y"]["file"] == str(tif) and (out / "y.png").exists()


def test_colliding_stems_get_distinct_outputs(tmp_path: Path) -> None:
    src = tmp_path / "in"
    save(src / "x.png", grain_image())
    Image.fromarray(grain_image(16, 40)).save(src / "x.tif")
    save(src / "y.png", grain_image(12, 12))
    manifest = predict.predict_folder(FakeModel(), str(src), str(tmp_path / "out"))
    assert set(manifest["images"]) == {"x_png", "x_tif", "y"}
    assert manifest["images"]["x_tif"]["file"] == str(src / "x.tif")
    assert manifest["images"]["x_tif"]["boundary_map"] == "x_tif.png"
    with Image.open(tmp_path / "out" / "x_tif.png") as im:
        assert im.size == (40, 16)  # the tif's own map, not the png's
    per_image = ("{}.png", "{}_grains.csv", "{}_overlay.png", "{}_hist.png")
    shared = ["grain_sizes.json", "grain_sizes.csv", "grain_sizes_summary.csv", "report.html"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [f.format(n) for n in ("x_png", "x_tif", "y") for f in per_image] + shared
    )
    # Case-insensitive collisions (distinct files on Linux, one file on macOS) are kept apart too.
    names = predict.output_names(["d/X.png", "d/x.png", "d/x.PNG", "d/x_png.tif"])
    assert len({n.casefold() for n in names.values()}) == 4
    # An image named like another's overlay gets a name of its own (here and against an earlier run).
    names = predict.output_names(["d/a.png", "d/a_overlay.png"])
    assert names == {"d/a.png": "a", "d/a_overlay.png": "a_overlay_2"}
    names = predict.output_names(["e/a.png"], earlier={"a_overlay": ["a_overlay.png", "a_overlay_grains.csv"]})
    assert names == {"e/a.png": "a_2"}


def test_a_corrupt_image_is_listed_and_the_rest_written(images: Path, tmp_path: Path) -> None:
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (images / "notes.txt").write_text("microscope settings")
    logged = []
    out = tmp_path / "out"
    manifest = predict.predict_folder(FakeModel(), str(images), str(out), log=logged.append)
    assert set(manifest["images"]) == {"a", "b"}
    [failed] = manifest["failed"]
    assert failed["file"] == str(images / "broken.png") and "cannot read image file" in failed["reason"]
    assert manifest["skipped"] == [
        {"file": str(images / "notes.txt"), "reason": manifest["skipped"][0]["reason"], "kind": "suffix"}
    ]
    assert [m for m in logged if "could not measure" in m and "broken.png" in m]  # (grain-size warnings also logged)
    assert not (out / "broken.png").exists() and no_temp_files(out)
    on_disk = json.loads((out / "grain_sizes.json").read_text())
    assert on_disk["failed"] == manifest["failed"] and on_disk["status"] == "complete"


def test_existing_files_in_out_are_overwritten_only_if_predict_wrote_them(
    images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    save(out / "a.png", np.zeros((3, 3), np.uint8))  # the user's own file, named like an output
    with pytest.raises(predict.UnsafeOutputError, match=r"out/a\.png exists and was not written by predict"):
        predict.predict_folder(FakeModel(), str(images), str(out))
    assert sorted(os.listdir(out)) == ["a.png"]
    (out / "report.html").write_text("mine")  # two of them: both named in the one message
    with pytest.raises(predict.UnsafeOutputError, match=r"out/a\.png, .*out/report\.html exist and were not written"):
        predict.predict_folder(FakeModel(), str(images), str(out))
    (out / "report.html").unlink()
    (out / "a.png").unlink()
    predict.predict_folder(FakeModel(), str(images), str(out))
    predict.predict_folder(FakeModel(), str(images), str(out))  # a rerun replaces its own outputs
    # A run that crashed after writing its manifest can be repeated.
    manifest = json.loads((out / "grain_sizes.json").read_text())
    manifest["status"] = "running"
    (out / "grain_sizes.json").write_text(json.dumps(manifest))
    predict.predict_folder(FakeModel(), str(images), str(out))
    # Someone else's grain_sizes.json is not taken over.
    (out / "grain_sizes.json").write_text("my notes")
    with pytest.raises(predict.UnsafeOutputError, match="grain_sizes.json exists and is not a manifest"):
        predict.predict_folder(FakeModel(), str(images), str(out))


def test_a_failing_image_does_not_keep_an_earlier_runs_map(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    predict.predict_folder(FakeModel(), str(images), str(out))
    (images / "b.png").write_bytes(b"garbage")
    manifest = predict.predict_folder(FakeModel(), str(images), str(out))
    assert [f["file"] for f in manifest["failed"]] == [str(images / "b.png")]
    assert not (out / "b.png").exists() and "b.png" not in manifest["outputs"]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_respect_the_umask(images: Path, tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        out = tmp_path / "out"
        predict.predict_folder(FakeModel(), str(images), str(out))
        io_utils.write_json_atomic(str(tmp_path / "j" / "x.json"), {"a": 1})
    finally:
        os.umask(old)
    files = [p for p in out.iterdir()] + [tmp_path / "j" / "x.json"]
    assert {p.suffix for p in files} == {".png", ".csv", ".json", ".html"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_predict_and_evaluate_report_the_same_grains(tmp_path: Path) -> None:
    img = grain_image(40, 40, 10)
    img[10, 14:16] = 230  # a 2-px gap: closing decides whether two grains merge
    save(tmp_path / "d" / "images" / "m.png", img)
    label = (grain_image(40, 40, 10) < 128).astype(np.uint8) * 255
    save(tmp_path / "d" / "labels" / "m.png", label)
    for settings in (pps.PostprocessSettings(close_radius=0), pps.PostprocessSettings(close_radius=1)):
        manifest = predict.predict_folder(
            FakeModel(),
            str(tmp_path / "d" / "images"),
            str(tmp_path / f"out{settings.close_radius}"),
            settings=settings,
        )
        result = evaluate.evaluate_folder(FakeModel(), str(tmp_path / "d"), settings=settings)
        assert result["per_image"]["m.png"]["n_grains_pred"] == manifest["images"]["m"]["n_grains"]
        assert result["per_image_raw"]["m.png"]["n_grains_pred"] == 15  # threshold only: the gap stays open
    assert manifest["images"]["m"]["n_grains"] == 16  # closing radius 1 bridged the gap
    assert set(result) >= {"mean", "mean_raw", "per_image", "per_image_raw", "postprocess", "label_warnings"}
    assert result["mean"]["grain_count_rel_error"] == 0.0 < result["mean_raw"]["grain_count_rel_error"]


def predict_values(images: Path, out: Path, workdir: Path, **kw) -> dict:
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
        settings={k: None for k in pps.SETTING_KEYS},
    )
    values.update(kw)
    return values


def test_stored_choice_is_the_default_and_flags_override(
    images: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    workdir = tmp_path / "wd"
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: FakeModel(tag=m))
    assert predict.run(predict_values(images, tmp_path / "o1", workdir)) == predict.EXIT_OK
    used = json.loads((tmp_path / "o1" / "grain_sizes.json").read_text())["postprocess"]
    assert used["source"] == pps.SOURCE_BUILTIN and used["settings"] == pps.BUILTIN_DEFAULTS.to_dict()
    chosen = pps.PostprocessSettings(0.4, 0, 80, 30, 1)
    postprocess_choice.save_choice(str(workdir), "fedavg", {"settings": chosen.to_dict()})
    predict.run(predict_values(images, tmp_path / "o2", workdir))
    used = json.loads((tmp_path / "o2" / "grain_sizes.json").read_text())["postprocess"]
    assert used["source"] == pps.SOURCE_CHOSEN and used["settings"] == chosen.to_dict()
    assert used["choice_file"] == str(workdir / "postprocess" / "fedavg.json")
    flags = {**{k: None for k in pps.SETTING_KEYS}, "close_radius": 2}
    predict.run(predict_values(images, tmp_path / "o3", workdir, settings=flags))
    used = json.loads((tmp_path / "o3" / "grain_sizes.json").read_text())["postprocess"]
    assert used["settings"] == {**chosen.to_dict(), "close_radius": 2}
    assert (
        used["per_setting"]["close_radius"] == pps.SOURCE_FLAGS and "flags (close_radius)" in used["source"]
    )
    # stdout: a short table for people (the JSON is in OUT/grain_sizes.json), with the settings' source.
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[:2] == ["image", "grains"] and "ASTM G" in printed
    assert used["source"] in printed and "report.html" in printed
    # evaluate resolves the same way.
    d = tmp_path / "d"
    save(d / "images" / "a.png", grain_image())
    save(d / "labels" / "a.png", (grain_image() < 128).astype(np.uint8) * 255)
    ev = dict(
        workdir=str(workdir),
        method="fedavg",
        client=None,
        data_dir=str(d),
        invert_labels=False,
        tolerance=2.0,
        overlap=None,
        flips=False,
        settings={k: None for k in pps.SETTING_KEYS},
        json=True,
    )
    assert evaluate.run(ev) == evaluate.EXIT_OK
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["postprocess"]["source"] == pps.SOURCE_CHOSEN and result["workdir"] == str(workdir)


def test_exit_status_is_one_when_an_image_failed(images: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(inference, "load_model", lambda w, m, c=None, **kw: FakeModel(tag=m))
    (images / "c.png").write_bytes(b"not an image")
    assert predict.run(predict_values(images, tmp_path / "out", tmp_path)) == predict.EXIT_SOME_FAILED
    assert (tmp_path / "out" / "a.png").exists() and (tmp_path / "out" / "b.png").exists()
