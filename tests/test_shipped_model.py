"""The shipped model: `export_model` writes a run's chosen model as a minimal workdir; predict and evaluate
without --workdir use it; a copy that ships none says so (exit 2) and writes nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax import evaluate, export_model, predict
from fedtransfer_jax.runs import inference

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def predict_values(images, out, workdir=None):
    return {
        "workdir": workdir, "method": None, "client": None, "allow_incomplete": False, "images": str(images),
        "out": str(out), "overlap": None, "flips": False, "pixel_size_um": 0.0, "exclude_border": False,
        "settings": {}, "scale": "1",
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("shipped")
    args = [
        sys.executable, os.path.join(REPO, "launch.py"), "--config", os.path.join(REPO, "experiments/grains.py:tiny"),
        "--config.methods=('fedavg',)", f"--config.data.tfds_dir={base / 'tfds'}", "--config.data.val_per_client=1",
        "--config.eval.every_rounds=1", "--config.eval.select=best_val", "--workdir", str(base / "run"),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO), cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    img = (np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8)
    (base / "in").mkdir()
    Image.fromarray(img).save(base / "in" / "a.png")
    return base


def test_no_shipped_model_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inference, "SHIPPED_ROOT", str(tmp_path / "none"))
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in" / "a.png")
    assert predict.cli(predict_values(tmp_path / "in", tmp_path / "out"), progress=False) == 2
    err = capsys.readouterr().err
    assert "--workdir" in err and "ships no trained model" in err and "experiments/pretrained.py" in err
    assert not (tmp_path / "out").exists()


def test_export_then_predict_without_workdir(trained, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "root" / "grains"
    assert export_model.run(str(trained / "run"), None, str(dest), note="test") == 0
    shipped = json.loads((dest / "shipped.json").read_text())
    model = inference.load_model(str(trained / "run"), "fedavg")
    assert shipped["method"] == "fedavg" and shipped["selection"] == "best_val" and shipped["round"] == model.round
    assert not (tmp_path / "root" / "grains.partial").exists()
    # Nothing is overwritten.
    assert export_model.run(str(trained / "run"), "fedavg", str(dest)) == 2
    assert "exists" in capsys.readouterr().err
    # The shipped folder holds the chosen params, read back as any workdir's.
    again = inference.load_model(str(dest), "fedavg")
    for a, b in zip(*(map(np.asarray, __import__("jax").tree.leaves(p)) for p in (model.params, again.params))):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(inference, "SHIPPED_ROOT", str(tmp_path / "root"))
    out_shipped, out_run = tmp_path / "o1", tmp_path / "o2"
    assert predict.cli(predict_values(trained / "in", out_shipped), progress=False) == 0
    assert predict.cli(predict_values(trained / "in", out_run, str(trained / "run")), progress=False) == 0
    a, b = (np.asarray(Image.open(o / "a.png")) for o in (out_shipped, out_run))
    np.testing.assert_array_equal(a, b)  # the same model, the same settings, the same map
    info = json.loads((out_shipped / "grain_sizes.json").read_text())["model_info"]
    assert "shipped" in info["method_reason"] and info["selection"] == "best_val"


def test_evaluate_without_workdir_needs_out(tmp_path):
    values = {"workdir": None, "out": None, "settings": {}}
    with pytest.raises(ValueError, match="--out"):
        evaluate.run(values)


def test_export_refuses_a_missing_workdir(tmp_path, capsys):
    assert export_model.run(str(tmp_path / "nope"), None, str(tmp_path / "d")) == 2
    assert "--workdir" in capsys.readouterr().err and not (tmp_path / "d").exists()
