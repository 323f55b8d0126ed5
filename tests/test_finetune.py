"""experiments/finetune.py: a lab fine-tunes the shipped model on its own labelled folder, with the recipe
experiments/personalise.py measured on the real TBM lab."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments import finetune, personalise
from fedtransfer_jax.data import synthetic
from fedtransfer_jax.runs import engine, inference

REPO = Path(__file__).resolve().parents[1]


def test_default_is_the_measured_recipe_on_any_folder():
    mine, measured = finetune.get_config().to_dict(), personalise.get_config().to_dict()
    engine.validate_config(finetune.get_config())
    assert mine["init_from"] == "shipped" and mine["methods"] == ("local",)
    for section in ("fl", "model", "augment", "loss", "eval"):
        assert mine[section] == measured[section], section
    data = {k: v for k, v in mine["data"].items() if mine["data"][k] != measured["data"].get(k)}
    # only where the lab's data lives differs (and that every folder in it is a lab)
    assert set(data) == {"source", "dir", "clients", "group_regex"} and data["dir"] == ""


def test_unknown_variant_names_the_file():
    with pytest.raises(ValueError, match="experiments/finetune.py"):
        finetune.get_config("huge")


def test_empty_data_dir_is_refused_before_a_workdir_naming_the_key():
    with pytest.raises(ValueError, match=r"^config key data.dir is empty: source 'folder'"):
        engine.check_data_folder(finetune.get_config())
    config = finetune.get_config("tiny")
    config.data.dir = str(REPO / "no_such_folder")
    with pytest.raises(ValueError, match=r"^config key data.dir: .*no_such_folder is not a folder$"):
        engine.check_data_folder(config)
    config.data.dir = str(REPO)  # a folder, but no lab in it
    with pytest.raises(ValueError, match=r"^no clients found in .*: expected .*/images \+ .*/labels"):
        engine.check_data_folder(config)


def test_a_missing_init_from_folder_is_refused_before_any_data_is_built(tmp_path, monkeypatch):
    config = finetune.get_config("tiny")
    config.init_from = str(tmp_path / "no_model")
    engine.validate_config(config)  # a config may name a model an earlier step of its study will train
    with pytest.raises(ValueError, match=r"^config key init_from: .*no_model' is neither 'shipped' nor a workdir"):
        inference.check_init_from(config)  # what launch checks before the workdir and the data build
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("model", "~/model", str(tmp_path / "model"), "shipped"):  # its model is checked when loaded
        config.init_from = name
        inference.check_init_from(config)


def labelled_folder(lab: Path, n: int) -> Path:
    (lab / "images").mkdir(parents=True)
    (lab / "labels").mkdir()
    images, labels, _ = synthetic.make_lab_examples("brightfield", n, 64, 3, diameter_px=(10.0, 16.0), boundary_width=2)
    for i, (img, lab_map) in enumerate(zip(images, labels)):
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(lab / "images" / f"m{i}.png")
        Image.fromarray((lab_map > 0).astype(np.uint8) * 255).save(lab / "labels" / f"m{i}.png")
    return lab


def test_too_few_micrographs_or_a_missing_label_are_refused_before_a_workdir(tmp_path):
    """launch checks the folder's split (file names only) before it makes the workdir."""
    config = finetune.get_config("tiny")
    config.data.dir = str(labelled_folder(tmp_path / "two", 2))
    with pytest.raises(ValueError, match=r"^data.val_fraction=0.2: cannot hold out validation images of client 'two'"):
        engine.check_data_folder(config)
    config.data.val_fraction = 0.0  # as the docstring says: two micrographs train without validation
    engine.check_data_folder(config)
    lab = labelled_folder(tmp_path / "three", 3)
    (lab / "labels" / "m1.png").unlink()
    config.data.dir, config.data.val_fraction = str(lab), 0.2
    with pytest.raises(ValueError, match=r"m1"):  # names the image without a label (not an OSError: not the workdir)
        engine.check_data_folder(config)


def test_tiny_run_on_a_labelled_folder_trains_and_predicts(tmp_path):
    lab = labelled_folder(tmp_path / "mylab", 4)
    wd = tmp_path / "my_model"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "launch.py", "--config", "experiments/finetune.py:tiny", f"--config.data.dir={lab}",
         "--workdir", str(wd)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((wd / "summary.json").read_text())
    assert list(summary["methods"]) == ["local"] and summary["clients"] == ["mylab"]
    out = tmp_path / "maps"
    proc = subprocess.run(
        [sys.executable, "-m", "fedtransfer_jax.predict", "--workdir", str(wd), "--images", str(lab / "images"),
         "--out", str(out), "--scale", "1"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "report.html").exists()
