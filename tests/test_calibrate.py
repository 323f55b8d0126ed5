"""calibrate: a model's post-processing chosen on a lab's own labelled images, written as a new calibrated copy
that predict and evaluate use; the before/after scores checked against an independent recomputation; bad
input (an existing --dest, a wrong --data_dir, a failure while writing) leaves nothing behind."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax import calibrate
from fedtransfer_jax.analysis import measure, scale as scale_lib
from fedtransfer_jax.data import folder, synthetic
from fedtransfer_jax.metrics import postprocess_select as pps
from fedtransfer_jax.runs import postprocess_choice


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Three synthetic bright-field micrographs with exact labels, as a lab's labelled folder."""
    base = tmp_path_factory.mktemp("lab")
    images, labels, _ = synthetic.make_lab_examples("brightfield", 3, 96, 7, diameter_px=(14.0, 24.0), boundary_width=3)
    (base / "images").mkdir()
    (base / "labels").mkdir()
    for i, (img, lab) in enumerate(zip(images, labels)):
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(base / "images" / f"m{i}.png")
        Image.fromarray((lab > 0).astype(np.uint8) * 255).save(base / "labels" / f"m{i}.png")
    return base


def values(data_dir, dest, **kw):
    return {"workdir": None, "method": None, "data_dir": str(data_dir), "dest": str(dest), "invert_labels": False,
            "tolerance": 2.0, "overlap": None, "flips": False, "scale": "1", "allow_incomplete": False, **kw}


def test_calibrated_copy_is_used_and_its_scores_are_recomputable(labelled, tmp_path, capsys):
    dest = tmp_path / "mine"
    assert calibrate.run(values(labelled, dest)) == 0
    assert "calibrated model" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # no staging folder left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(dest).st_mode & 0o777 == 0o777 & ~umask  # as any new folder, not a temporary folder's 0700
    record = json.loads((dest / calibrate.CALIBRATION_FILE).read_text())
    method = record["method"]
    assert record["images"] == ["m0.png", "m1.png", "m2.png"] and set(record["after"]["scales"].values()) == {1.0}
    assert len(record["rounds"]) <= 2  # a fixed scale: the second round repeats the first's choice

    # predict/evaluate resolve the new settings, and say where they came from.
    settings, prov = postprocess_choice.resolve_settings(str(dest), method)
    assert settings.to_dict() == record["after"]["settings"]
    assert "calibrate" in prov["source"] and str(labelled) in prov["source"]

    # Independent recomputation: the shipped model's own settings and the new ones, scored per image.
    f = {"workdir": None, "method": None, "client": None, "overlap": None}
    model, old, _ = measure.model_and_settings(f, {})
    assert old.to_dict() == record["before"]["settings"]
    probs, truths = [], []
    for image_path, label_path in folder.list_pairs(str(labelled)):
        image, label = folder.load_pair(image_path, label_path)
        probs.append(scale_lib.probabilities(model, image, scale=1.0, settings=old)[0])
        truths.append(label > 0)
    for which, s in (("before", old), ("after", settings)):
        mean = np.mean([pps.tile_scores(s.apply(p), t) for p, t in zip(probs, truths)], axis=0)
        np.testing.assert_allclose(mean, [record[which]["mean"][k] for k in pps.SCORE_COLUMNS], rtol=1e-9, atol=1e-12)
    # The choice is the grid's best on these images (the old settings are in the grid, first).
    assert record["after"]["mean"]["objective"] >= record["before"]["mean"]["objective"]
    for other in pps.DEFAULT_GRID[::7]:
        mean = np.mean([pps.tile_scores(other.apply(p), t) for p, t in zip(probs, truths)], axis=0)
        assert mean[0] <= record["after"]["mean"]["objective"] + 1e-12, other
    # The copy's other files say their numbers predate the calibration.
    assert "calibrate" in json.loads((dest / "shipped.json").read_text())["calibrated"]
    # The copy's params are the model's: the same map with the same settings.
    again, _, _ = measure.model_and_settings({**f, "workdir": str(dest)}, {})
    np.testing.assert_array_equal(scale_lib.probabilities(again, image, scale=1.0, settings=old)[0], probs[-1])


def test_existing_dest_and_bad_data_dir_exit_2_and_write_nothing(labelled, tmp_path, capsys):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--dest"):
        calibrate.run(values(labelled, dest))
    assert os.listdir(dest) == ["keep.txt"]
    with pytest.raises(FileNotFoundError):
        calibrate.run(values(tmp_path / "nowhere", tmp_path / "new"))
    os.symlink(tmp_path / "gone", tmp_path / "dangling")  # a dangling link is not a free --dest either
    with pytest.raises(FileExistsError, match="--dest"):
        calibrate.run(values(labelled, tmp_path / "dangling"))
    os.remove(tmp_path / "dangling")
    with pytest.raises(ValueError, match="--tolerance"):
        calibrate.run(values(labelled, tmp_path / "new", tolerance=-1.0))
    assert sorted(os.listdir(tmp_path)) == ["mine"]


def test_a_dest_that_cannot_be_written_fails_before_the_scoring(labelled, tmp_path, monkeypatch):
    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(calibrate.inference.tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(calibrate.predict, "model_and_settings", lambda *a, **k: pytest.fail("scored first"))
    with pytest.raises(PermissionError, match=r"^--dest .*mine: cannot write into .*\(Read-only file system\)"):
        calibrate.run(values(labelled, tmp_path / "mine"))


def test_a_failure_while_writing_leaves_nothing(labelled, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(postprocess_choice, "save_choice", fail)
    with pytest.raises(OSError, match="disk full"):
        calibrate.run(values(labelled, tmp_path / "mine"))
    assert os.listdir(tmp_path) == []


def test_cli_exit_status_2_names_the_flag(labelled, tmp_path):
    (tmp_path / "taken").mkdir()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-m", "fedtransfer_jax.calibrate", "--data_dir", str(labelled), "--dest", str(tmp_path / "taken")],
        capture_output=True, text=True, cwd=repo, env=dict(os.environ, PYTHONPATH=repo), timeout=300,
    )
    assert proc.returncode == 2 and "--dest" in proc.stderr and "exists" in proc.stderr
    assert os.listdir(tmp_path / "taken") == []


def test_auto_scale_after_scores_are_what_evaluate_measures_with_the_copy(tmp_path):
    """With --scale auto the scales depend on the settings: the stored 'after' scores must be those of the
    calibrated copy as evaluate runs it (its own scale search with the new settings)."""
    from fedtransfer_jax import evaluate

    lab = tmp_path / "lab"
    images, labels, _ = synthetic.make_lab_examples("darkfield", 2, 160, 3, diameter_px=(10.0, 40.0), boundary_width=3)
    (lab / "images").mkdir(parents=True)
    (lab / "labels").mkdir()
    for i, (img, lbl) in enumerate(zip(images, labels)):
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(lab / "images" / f"d{i}.png")
        Image.fromarray((lbl > 0).astype(np.uint8) * 255).save(lab / "labels" / f"d{i}.png")
    dest = tmp_path / "mine"
    assert calibrate.run(values(lab, dest, scale="auto")) == 0
    record = json.loads((dest / calibrate.CALIBRATION_FILE).read_text())
    f = {"workdir": str(dest), "method": None, "client": None, "overlap": None}
    model, settings, prov = measure.model_and_settings(f, {})
    result = evaluate.evaluate_folder(model, str(lab), settings=settings, provenance=prov, scale="auto")
    assert {k: v["used"] for k, v in result["scale"].items()} == record["after"]["scales"]
    for key in ("boundary_f1", "ari"):
        np.testing.assert_allclose(result["mean"][key], record["after"]["mean"][key], rtol=1e-6, atol=1e-9)
    # ... and the model's own settings at their own scales did no better.
    assert record["after"]["mean"]["objective"] >= record["before"]["mean"]["objective"]
