"""The shipped model: experiments/pretrained.py:tiny trains (scale-robust data: grain sizes over a range, label
widths per image, a deeper U-Net), `export_model` writes the run's chosen model as a minimal workdir, predict
and evaluate without --workdir use it, `init_from` starts a run from it; a copy that ships none says so
(exit 2) and writes nothing."""

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
        sys.executable, os.path.join(REPO, "launch.py"), "--config", os.path.join(REPO, "experiments/pretrained.py:tiny"),
        "--config.methods=('fedavg',)", f"--config.data.tfds_dir={base / 'tfds'}", "--workdir", str(base / "run"),
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
    manifest = json.loads((out_shipped / "grain_sizes.json").read_text())
    info = manifest["model_info"]
    assert "shipped" in info["method_reason"] and info["selection"] == "best_val"


def test_evaluate_without_workdir(trained, tmp_path, monkeypatch):
    values = {"workdir": None, "out": None, "settings": {}}
    monkeypatch.setattr(inference, "SHIPPED_ROOT", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="ships no trained model"):  # that first, then --out
        evaluate.run(values)
    assert export_model.run(str(trained / "run"), "fedavg", str(tmp_path / "root" / "grains")) == 0
    monkeypatch.setattr(inference, "SHIPPED_ROOT", str(tmp_path / "root"))
    with pytest.raises(ValueError, match="--out"):
        evaluate.run(values)


def test_export_refuses_a_missing_workdir(tmp_path, capsys):
    assert export_model.run(str(tmp_path / "nope"), None, str(tmp_path / "d")) == 2
    assert "--workdir" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_init_from_starts_every_method_from_the_trained_model(trained, tmp_path, monkeypatch):
    import importlib.util

    import jax

    from fedtransfer_jax.runs import engine, run_context

    spec = importlib.util.spec_from_file_location("g", os.path.join(REPO, "experiments", "pretrained.py"))
    grains = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grains)
    config = grains.get_config("tiny")
    model = engine.build_model(config)
    tile = int(config.data.tile_size)
    fresh = run_context.starting_params(config, model, tile)
    config.init_from = str(trained / "run")
    started = run_context.starting_params(config, model, tile)
    chosen = inference.load_model(str(trained / "run"), "fedavg").params
    for a, b in zip(jax.tree.leaves(started), jax.tree.leaves(chosen)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(started), jax.tree.leaves(fresh)))
    # 'shipped' reads the package's model; a different architecture is refused, naming the key.
    monkeypatch.setattr(inference, "SHIPPED_ROOT", str(tmp_path / "none"))
    config.init_from = "shipped"
    with pytest.raises(FileNotFoundError, match="ships no trained model"):
        run_context.starting_params(config, model, tile)
    config.init_from = str(trained / "run")
    config.model.features = (4, 8)  # the trained one has (4, 8, 8)
    with pytest.raises(ValueError, match="init_from.*model keys"):
        run_context.starting_params(config, engine.build_model(config), tile)
    config.init_from = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="init_from"):
        run_context.starting_params(config, model, tile)
    # Different GroupNorm groups: the same shapes, another network.
    config.init_from, config.model.features, config.model.groups = str(trained / "run"), (4, 8, 8), 2
    with pytest.raises(ValueError, match="init_from.*model keys"):
        run_context.starting_params(config, engine.build_model(config), tile)


def test_init_from_is_recorded_and_pinned_on_resume(trained, tmp_path):
    import importlib.util

    from fedtransfer_jax.runs import engine, run_context

    spec = importlib.util.spec_from_file_location("g", os.path.join(REPO, "experiments", "pretrained.py"))
    grains = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grains)
    config = grains.get_config("tiny")
    config.init_from = str(trained / "run")
    model, tile = engine.build_model(config), int(config.data.tile_size)
    run_context.starting_params(config, model, tile, str(tmp_path))
    recorded = json.loads((tmp_path / run_context.INIT_FROM_FILE).read_text())
    assert recorded["method"] == "fedavg" and len(recorded["digest"]) == 64
    assert recorded["intensity"] == "stretch"  # how the initial model was fed (pretrained.py:tiny stretches)
    run_context.starting_params(config, model, tile, str(tmp_path))  # a resume from the same model
    recorded["digest"] = "0" * 64  # as if the source had been retrained since
    (tmp_path / run_context.INIT_FROM_FILE).write_text(json.dumps(recorded))
    with pytest.raises(ValueError, match="init_from.*other params"):
        run_context.starting_params(config, model, tile, str(tmp_path))


def test_cpu_variant_is_the_default_data_and_model_with_a_smaller_budget():
    import importlib.util

    spec = importlib.util.spec_from_file_location("p", os.path.join(REPO, "experiments", "pretrained.py"))
    pretrained = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrained)
    full, cpu = pretrained.get_config(None), pretrained.get_config("cpu")
    assert cpu.model == full.model and cpu.augment == full.augment
    # The same data, except that `cpu` (the first shipped model) trained on raw intensities and later models stretch.
    assert (cpu.data.intensity, full.data.intensity) == ("raw", "stretch")
    cpu.data.intensity = full.data.intensity
    assert cpu.data == full.data
    assert pretrained.get_config("cpu_cycle2").data.intensity == "stretch"
    assert cpu.methods == ("gen_random_style",) and cpu.fl.rounds == 20 < full.fl.rounds
    with pytest.raises(ValueError, match="unknown variant .gpu.; choose one of default, cpu"):
        pretrained.get_config("gpu")
    # `synthetic_cpu` (the few-label curve's start) is `cpu`'s recipe on the synthetic labs only, stretched.
    syn = pretrained.get_config("synthetic_cpu")
    assert syn.data.clients == pretrained.SYNTHETIC_LABS and syn.data.source == "synthetic"
    assert (syn.methods, syn.fl.rounds, syn.model, syn.data.intensity) == (cpu.methods, 20, cpu.model, "stretch")


def test_dest_must_be_a_new_folder(tmp_path):
    """export_model's and calibrate's --dest: never empty (the staging would land in the parent of the current
    folder), never a dangling link (the final rename would replace it); calibrate's parent must exist."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for dest, error, words in (("", ValueError, "--dest is empty"),
                               (tmp_path / "dangling", FileExistsError, "is a dangling link: export"),
                               (tmp_path / "x" / "y", FileNotFoundError, "does not exist")):
        tool = "calibrate" if error is FileNotFoundError else "export"
        with pytest.raises(error, match=words):
            inference.check_new_folder(str(dest), tool)
    inference.check_new_folder(str(tmp_path / "x" / "y"), "export", parent_must_exist=False)
