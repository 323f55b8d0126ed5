"""End-to-end: launch config -> trainer -> workdir contract, resume, evaluate/predict CLIs."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from PIL import Image

from fedtransfer_jax.runs import inference, train
from fedtransfer_jax.data import folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from experiments import grains  # noqa: E402


def tiny_config(**fl):
    config = grains.get_config("tiny")
    config.methods = ("fedavg",)
    for k, v in fl.items():
        config.fl[k] = v
    return config


@pytest.fixture(scope="module")
def shared_tfds(tmp_path_factory):
    """One tfds cache for the module's tiny runs: a build is keyed by its data config, so runs that share
    the data reuse it (the build itself is tested in test_data_io)."""
    return str(tmp_path_factory.getbasetemp() / "tfds")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run of all four methods, shared by the contract tests."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = grains.get_config("tiny")
    config.data.tfds_dir = str(tmp_path_factory.getbasetemp() / "tfds")
    config.data.unseen_clients = ("tint",)
    summary = train.train_and_evaluate(config, workdir)
    return workdir, summary


def test_summary_contract(tiny_run):
    workdir, _ = tiny_run
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert set(summary["methods"]) == {
        "local",
        "centralized",
        "fedavg",
        "fedprox",
        "fedtransfer",
        "fedtransfer_fourier",
        "fedtransfer_gen",
    }
    assert "config" in summary
    for name, m in summary["methods"].items():
        for key in ("boundary_f1", "ari", "vi", "grain_count_rel_error", "miou"):
            assert key in m["mean"], (name, key)
            for client_metrics in m["per_client"].values():
                assert np.isfinite(client_metrics[key])
        assert isinstance(m["wall_seconds"], float)
        assert m["round_compilations"] == 1, name
        assert m["augmentation"]["order"][0] == "flip_h", name  # every method augmented alike (config.augment)
    for name in ("fedavg", "fedprox", "fedtransfer", "fedtransfer_fourier", "fedtransfer_gen"):
        ledger = summary["methods"][name]["privacy_ledger"]
        assert ledger["image_shaped_arrays_sent"] is False
        assert sum(ledger["bytes_sent_per_client"].values()) > 0
    # FedTransfer clients send style statistics (and style-network deltas), nothing image-shaped.
    assert set(summary["methods"]["fedtransfer"]["privacy_ledger"]["tensors"]) == {
        "style_net_update",
        "style_stats",
        "model_update",
    }
    for name in ("fedtransfer_fourier", "fedtransfer_gen"):  # nothing to train: only statistics are shared
        assert set(summary["methods"][name]["privacy_ledger"]["tensors"]) == {"style_stats", "model_update"}
    for name, m in summary["methods"].items():  # the unseen lab, reported per method
        assert set(m["unseen"]["per_client"]) == {"tint"}, name
        assert 0.0 <= m["unseen"]["mean"]["boundary_f1"] <= 1.0
    for fig in (
        "style_grid_fedtransfer.png",
        "style_grid_fedtransfer_fourier.png",
        "style_grid_fedtransfer_gen.png",
        "predictions.png",
    ):
        assert os.path.getsize(os.path.join(workdir, fig)) > 0
    assert os.path.exists(os.path.join(workdir, "summary.md"))
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(l) for l in f]
    rounds = [l for l in lines if l.get("method") == "fedavg" and "round" in l]
    assert [l["round"] for l in rounds] == [1, 2]
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "fedavg"))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "local", "brightfield"))


def _final_params(workdir, method="fedavg"):
    return inference.load_model(workdir, method).params


def test_resume_gives_the_same_final_params(tmp_path, shared_tfds):
    tfds_dir = shared_tfds
    straight = tiny_config(rounds=3)
    straight.data.tfds_dir = tfds_dir
    train.train_and_evaluate(straight, str(tmp_path / "straight"))
    # Stop after 1 round, then restart asking for 3: rounds 2-3 resume from the round-1 checkpoint.
    first = tiny_config(rounds=1)
    first.data.tfds_dir = tfds_dir
    train.train_and_evaluate(first, str(tmp_path / "resumed"))
    again = tiny_config(rounds=3)
    again.data.tfds_dir = tfds_dir
    train.train_and_evaluate(again, str(tmp_path / "resumed"))
    with open(tmp_path / "resumed" / "metrics.jsonl") as f:
        rounds = [json.loads(l)["round"] for l in f if '"round"' in l]
    assert rounds == [1, 2, 3]  # round 1 was not redone
    chex.assert_trees_all_close(
        _final_params(str(tmp_path / "resumed")),
        _final_params(str(tmp_path / "straight")),
        rtol=1e-6,
        atol=1e-7,
    )


def test_same_seed_same_numbers_different_seed_different(tmp_path, shared_tfds):
    tfds_dir = shared_tfds
    outs = []
    for i, seed in enumerate((0, 0, 1)):
        c = tiny_config(rounds=1)
        c.seed = seed
        c.data.tfds_dir = tfds_dir
        outs.append(train.train_and_evaluate(c, str(tmp_path / f"r{i}"))["methods"]["fedavg"]["mean"])
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_precomputed_restyling_runs_one_compiled_round(tmp_path, shared_tfds):
    c = tiny_config(rounds=1)
    c.methods = ("fedtransfer_gen",)
    c.style.restyle = "precomputed"
    c.style.precomputed_copies = 1
    c.data.tfds_dir = shared_tfds
    c.figures = False
    m = train.train_and_evaluate(c, str(tmp_path / "pre"))["methods"]["fedtransfer_gen"]
    assert m["round_compilations"] == 1
    assert m["style"]["restyle"] == "precomputed" and m["style"]["precompute_seconds"] >= 0.0
    assert not m["privacy_ledger"]["image_shaped_arrays_sent"]


def test_nan_loss_names_method_and_round(tmp_path, shared_tfds):
    c = tiny_config(rounds=2, client_lr=1e30, client_optimizer="sgd")
    c.data.tfds_dir = shared_tfds
    with pytest.raises(FloatingPointError, match=r"fedavg: training loss is .* in round 1"):
        train.train_and_evaluate(c, str(tmp_path / "nan"))


def test_unknown_method_is_named(tmp_path):
    c = tiny_config()
    c.methods = ("fedavg", "fedmagic")
    with pytest.raises(ValueError, match="fedmagic"):
        train.train_and_evaluate(c, str(tmp_path / "bad"))


def test_method_spec_style_targets_is_checked_and_defaults_to_foreign():
    from fedtransfer_jax.runs import engine  # noqa: PLC0415

    c = tiny_config()
    assert engine.method_spec(c, "fedtransfer_gen").style_targets == "foreign"
    assert engine.method_spec(c, "gen_own_style").style_targets == "own"
    c.method_specs.gen_own_style.style_targets = "everyone"
    with pytest.raises(ValueError, match=r"method_specs\.gen_own_style\.style_targets.*'everyone'"):
        engine.method_spec(c, "gen_own_style")


def test_launch_rejects_unknown_config_key(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "launch.py"),
            "--config",
            os.path.join(REPO, "experiments/grains.py:tiny"),
            "--config.fl.no_such_key=3",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "no_such_key" in proc.stderr


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repo root, as a user would run it."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def test_evaluate_and_predict_clis(tiny_run, tmp_path):
    workdir, _ = tiny_run
    # A labelled folder with a non-tile-sized grey image and an RGB one.
    rng = np.random.default_rng(0)
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "labels").mkdir(parents=True)
    for stem, shape in (("grey", (45, 70)), ("rgb", (40, 33, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(
            tmp_path / "d" / "images" / f"{stem}.png"
        )
        lab = np.zeros(shape[:2], np.uint8)
        lab[:, shape[1] // 2] = 255
        Image.fromarray(lab).save(tmp_path / "d" / "labels" / f"{stem}.png")
    out = run_cli(
        "fedtransfer_jax.evaluate",
        "--workdir",
        workdir,
        "--method",
        "fedavg",
        "--data_dir",
        str(tmp_path / "d"),
        "--out",
        str(tmp_path / "eval.json"),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "grey.png" in out.stdout and f"full results: {tmp_path / 'eval.json'}" in out.stdout
    result = json.loads((tmp_path / "eval.json").read_text())
    assert set(result["per_image"]) == {"grey.png", "rgb.png"}
    assert 0.0 <= result["mean"]["boundary_f1"] <= 1.0

    out = run_cli(
        "fedtransfer_jax.predict",
        *("--workdir", workdir, "--method", "local", "--client", "darkfield"),
        *("--images", str(tmp_path / "d" / "images"), "--out", str(tmp_path / "pred")),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for stem, shape in (("grey", (45, 70)), ("rgb", (40, 33))):
        pred = np.asarray(Image.open(tmp_path / "pred" / f"{stem}.png"))
        assert pred.shape == shape
        assert set(np.unique(pred).tolist()) <= {0, 255}
        assert (tmp_path / "pred" / f"{stem}_grains.csv").exists()
    assert (tmp_path / "pred" / "grain_sizes.json").exists()


def test_predict_needs_client_for_local(tiny_run):
    workdir, _ = tiny_run
    with pytest.raises(ValueError, match="--client"):
        inference.load_model(workdir, "local")


def test_random_style_control_shares_nothing_and_trains(tmp_path, shared_tfds):
    """gen_random_style re-renders in styles drawn from gen's prior: no style message crosses the boundary."""
    c = tiny_config(rounds=1)
    c.methods = ("gen_random_style",)
    c.data.tfds_dir = shared_tfds
    c.figures = False
    m = train.train_and_evaluate(c, str(tmp_path / "rand"))["methods"]["gen_random_style"]
    assert m["style"]["targets"] == "random" and m["style"]["prior_styles"] == c.style.prior_styles
    assert "style_stats" not in m["privacy_ledger"].get("channels", {}), m["privacy_ledger"]
    assert np.isfinite(m["mean"]["ari"])
