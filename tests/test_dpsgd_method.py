"""DP-SGD as a method of a run: the `dpsgd` spec key, its per-micrograph accounting, and a launch."""

import json
import subprocess
import sys
from pathlib import Path

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import grains
from fedtransfer_jax.fl.algorithms.base import run_local_training
from fedtransfer_jax.runs import engine

ROOT = Path(__file__).resolve().parents[1]


def _config(**spec):
    config = grains.get_config("tiny")
    config.method_specs["private"] = grains.method("fedavg", **spec)
    return config


def test_spec_without_dpsgd_records_no_key():
    spec = engine.method_spec(_config(), "private")
    assert spec.dpsgd == {} and "dpsgd" not in spec.as_dict()
    assert engine.dpsgd_mechanism(spec) is None


def test_spec_fills_defaults_and_builds_the_mechanism():
    spec = engine.method_spec(_config(dpsgd={"noise_multiplier": 1.5, "clip_norm": 0.5, "units_per_batch": 4}), "private")
    assert spec.as_dict()["dpsgd"]["delta"] == 1e-5 and spec.dpsgd["tiles_per_unit"] == 1
    mech = engine.dpsgd_mechanism(spec)
    assert (mech.noise_multiplier, mech.clip_norm, mech.units_per_batch) == (1.5, 0.5, 4.0)


@pytest.mark.parametrize(
    "dpsgd, names",
    [
        ({"noise_multiplier": 1.0, "units_per_batch": 4}, "dpsgd.clip_norm"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "units_per_batch": 4, "sigma": 2}, "dpsgd.sigma"),
        ({"noise_multiplier": -1.0, "clip_norm": 1.0, "units_per_batch": 4}, "dpsgd.noise_multiplier"),
        ({"noise_multiplier": 1.0, "clip_norm": 0.0, "units_per_batch": 4}, "dpsgd.clip_norm"),
        ({"noise_multiplier": 1.0, "clip_norm": 1.0, "units_per_batch": 4, "delta": 2.0}, "dpsgd.delta"),
    ],
)
def test_bad_dpsgd_spec_names_the_key(dpsgd, names):
    with pytest.raises(ValueError, match=f"method_specs.private.{names}"):
        engine.method_spec(_config(dpsgd=dpsgd), "private")


def test_dpsgd_only_for_federated_methods():
    config = grains.get_config("tiny")
    config.method_specs["lonely"] = {"kind": "local", "dpsgd": grains.dpsgd(1.0, 4)}
    with pytest.raises(ValueError, match="method_specs.lonely.dpsgd"):
        engine.method_spec(config, "lonely")


def test_example_accounting_matches_dp_accounting_directly():
    """Independent reference: the Poisson-sampled Gaussian composed rounds x local steps times, by hand."""
    spec = engine.method_spec(_config(dpsgd=grains.dpsgd(1.2, 8, max_units_per_step=0)), "private")
    acc = engine.example_privacy_accounting(spec, rounds=5, local_steps=3, units_per_client={"a": 64, "b": 32})
    for name, units in (("a", 64), ("b", 32)):
        ref = dp_accounting.rdp.RdpAccountant()
        ref.compose(dp_accounting.PoissonSampledDpEvent(8 / units, dp_accounting.GaussianDpEvent(1.2)), 15)
        assert acc["per_client"][name]["epsilon"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
        assert acc["per_client"][name]["delta"] == 1e-5
    # The worst lab is the one with fewer micrographs (a larger sampling rate).
    assert acc["epsilon"] == acc["per_client"]["b"]["epsilon"] > acc["per_client"]["a"]["epsilon"]
    assert acc["steps"] == 15


def test_physical_batch_cap_adds_its_truncation_to_delta():
    spec = engine.method_spec(_config(dpsgd=grains.dpsgd(1.0, 4, max_units_per_step=6)), "private")
    acc = engine.example_privacy_accounting(spec, rounds=2, local_steps=5, units_per_client={"a": 16})
    assert acc["delta"] > 1e-5 + 1e-4  # P[Binomial(16, 1/4) > 6] ~ 0.08 per step, x 10 steps


def test_local_training_takes_the_clipped_gradient():
    """With plain SGD, no noise and a tiny clip norm, DP-SGD steps move the params by at most
    lr x clip x (real units / B) per step; the ordinary minibatch step moves them far more."""
    config = grains.get_config("tiny")
    config.fl.client_optimizer = "sgd"
    config.fl.client_lr = 0.1
    config.augment.enabled = False
    config.model.features = (4,)
    config.model.groups = 2
    model = engine.build_model(config)
    loss_fn = engine.make_loss(config, model)
    params = engine.init_params(config, model, 16)
    rng = np.random.default_rng(0)
    data = {
        "images": jnp.asarray(rng.uniform(size=(4, 16, 16, 3)), jnp.float32),
        "labels": jnp.asarray(rng.uniform(size=(4, 16, 16)) < 0.3, jnp.float32),
        "mask": jnp.ones((4,), bool),
    }
    spec = engine.method_spec(_config(dpsgd=grains.dpsgd(0.0, 2, clip_norm=1e-4)), "private")
    moved = {}
    for name, mech in (("dp", engine.dpsgd_mechanism(spec)), ("plain", None)):
        local = engine.local_training(config, loss_fn, dpsgd=mech)
        out, _ = jax.jit(lambda p, d, lt=local: run_local_training(lt, p, d, jnp.int32(0), jax.random.PRNGKey(1)))(
            params, data
        )
        diff = jax.tree_util.tree_map(lambda a, b: a - b, out, params)
        moved[name] = float(jnp.sqrt(sum(jnp.sum(d * d) for d in jax.tree_util.tree_leaves(diff))))
    steps = int(config.fl.local_steps)
    assert moved["dp"] <= steps * 0.1 * 1e-4 * (4 / 2) * (1 + 1e-3)
    assert moved["plain"] > 100 * moved["dp"]


def test_privacy_dpsgd_tiny_launch_reports_example_level_epsilon(tmp_path):
    workdir = tmp_path / "w"
    out = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--config",
            "experiments/privacy.py:dpsgd_tiny",
            "--workdir",
            str(workdir),
            "--config.methods=('dpsgd_z1',)",
            "--config.fl.rounds=1",
            "--config.fl.local_steps=1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    ex = summary["methods"]["dpsgd_z1"]["example_level_dp"]
    assert ex["steps"] == 1  # 1 round x 1 local step
    assert set(ex["per_client"]) == {"brightfield", "darkfield", "sem", "lowcontrast"}
    assert all(c["micrographs"] == 8 for c in ex["per_client"].values())
    ref = dp_accounting.rdp.RdpAccountant()
    ref.compose(dp_accounting.PoissonSampledDpEvent(2 / 8, dp_accounting.GaussianDpEvent(1.0)), ex["steps"])
    assert ex["epsilon"] == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    assert "example level" in (workdir / "summary.md").read_text()
