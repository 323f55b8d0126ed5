"""The many-client population (data/population.py) and its host-sampled rounds (runs/population_training.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fedtransfer_jax.data import population as pop_lib
from fedtransfer_jax.data import styles
from fedtransfer_jax.runs import population_training as pt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spec(n, **kw):
    return pop_lib.PopulationSpec(num_clients=n, seed=3, tile_size=16, diameter_px=(3.0, 6.0), **kw)


def test_tiles_deterministic_per_client_independent_of_n_and_order():
    small, big = pop_lib.Population(_spec(20)), pop_lib.Population(_spec(500))
    forward = {c: small.tiles(c) for c in (0, 7, 19)}
    backward = {c: big.tiles(c) for c in (19, 7, 0)}  # other N, other order
    for c in forward:
        np.testing.assert_array_equal(forward[c][0], backward[c][0])
        np.testing.assert_array_equal(forward[c][1], backward[c][1])
        # And the pure function (no population at all) agrees.
        im, lb = pop_lib.render_tiles(_spec(1), c)
        np.testing.assert_array_equal(im, forward[c][0])
        np.testing.assert_array_equal(lb, forward[c][1])
    im, lb = forward[7]
    assert im.dtype == np.uint8 and im.shape[1:] == (16, 16, 3) and lb.shape == im.shape[:3]
    assert 2 <= len(im) <= 4 and set(np.unique(lb)) <= {0, 1}
    # Different clients differ; a different population seed changes a client.
    assert not np.array_equal(forward[0][0][:1], forward[7][0][:1])
    other = pop_lib.render_tiles(pop_lib.PopulationSpec(num_clients=1, seed=4, tile_size=16, diameter_px=(3.0, 6.0)), 0)
    assert other[0].shape != forward[0][0].shape or not np.array_equal(other[0], forward[0][0])


def test_client_prior_shares_the_style_ranges():
    pop = pop_lib.Population(_spec(200))
    assert set(np.unique(pop.style)) == set(range(len(pop.spec.styles)))  # every base style drawn
    for c in range(0, 200, 17):
        d = pop.describe(c)
        full = styles.STYLE_RANGES[d["style"]]
        assert list(d["style_ranges"]) == list(full)
        for key, (lo, hi) in d["style_ranges"].items():
            flo, fhi = full[key]
            assert flo - 1e-6 <= lo <= hi <= fhi + 1e-6, (c, key)
        assert 3.0 - 1e-4 <= d["diameter_px"][0] <= 6.0 + 1e-4


def test_bytes_per_client_bounded():
    pop = pop_lib.Population(_spec(1000))
    assert pop.nbytes / len(pop) < 1024
    assert pop.nbytes / len(pop) <= pop_lib.PARAM_BYTES


def test_held_out_clients_are_outside_the_population():
    pop = pop_lib.Population(_spec(10))
    with pytest.raises(ValueError, match="held-out"):
        pop.held_out(2, first=5)
    im, lb = pop.held_out(2, first=10**8)
    assert len(im) == len(lb) >= 4
    data = pop.client_data([1, 2, 3])
    assert data.images.shape == (3, 4, 16, 16, 3) and data.mask.sum() == sum(pop.n_tiles[[1, 2, 3]])


def test_round_sampling_deterministic():
    a = pt.sample_round_clients(0, 5, 1000, 30)
    np.testing.assert_array_equal(a, pt.sample_round_clients(0, 5, 1000, 30))
    assert len(set(a.tolist())) == 30 and a.max() < 1000
    assert not np.array_equal(a, pt.sample_round_clients(0, 6, 1000, 30))
    assert not np.array_equal(a, pt.sample_round_clients(1, 5, 1000, 30))
    with pytest.raises(ValueError):
        pt.sample_round_clients(0, 0, 10, 11)


def _config():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mc", os.path.join(REPO, "experiments", "many_clients.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config("tiny")


@pytest.mark.parametrize("z", [0.0, 1.0])
def test_driver_two_rounds_k4_of_1000(z):
    config = _config()
    population = pop_lib.Population(pt.population_spec(config, 1000))
    trainer = pt.PopulationTrainer(config, mesh=None)
    out = trainer.train(population, num_clients=1000, clients_per_round=4, noise_multiplier=z, rounds=2, seed=0)
    assert len(out["losses"]) == 2 and all(np.isfinite(out["losses"]))
    if z == 0:
        assert all(l > 0 for l in out["losses"])  # FedAvg reports the mean client loss
        assert out["accounting"] is None
    else:
        acc = out["accounting"]
        assert acc["q"] == pytest.approx(4 / 1000) and acc["delta"] <= 1 / 1000
        assert 0 < acc["epsilon"] < acc["epsilon_without_sampling_amplification"]
        # dp.clip_norm = 0 (the config's default): the initial clip is Adam's update bound lr x steps x sqrt(d).
        d = sum(int(x.size) for x in __import__("jax").tree_util.tree_leaves(out["params"]))
        lr, steps = float(config.fl.client_lr), int(config.fl.local_steps)
        assert float(config.dp.clip_norm) == 0.0
        assert acc["clip_norm"] == pytest.approx(lr * steps * np.sqrt(d), rel=1e-6)
    leaves = [np.asarray(x) for x in __import__("jax").tree_util.tree_leaves(out["params"])]
    assert all(np.isfinite(x).all() for x in leaves)


def test_initial_clip_norm_explicit_or_adam_bound():
    config = _config()
    config.dp.clip_norm = 0.25
    assert pt.initial_clip_norm(config, 10_000) == 0.25
    config.dp.clip_norm = 0.0
    config.fl.client_lr, config.fl.local_steps = 1e-3, 5
    assert pt.initial_clip_norm(config, 10_000) == pytest.approx(1e-3 * 5 * 100)
    config.fl.client_optimizer = "sgd"  # no data-independent bound on an SGD step
    with pytest.raises(ValueError, match="dp.clip_norm"):
        pt.initial_clip_norm(config, 10_000)
    with pytest.raises(ValueError, match="dp.clip_norm"):
        pt.validate_config(config)
    config.dp.clip_norm = -1.0
    with pytest.raises(ValueError, match="dp.clip_norm"):
        pt.validate_config(config)


def test_stateful_algorithm_refused():
    config = _config()
    config.fl.algorithm = "scaffold"
    population = pop_lib.Population(pt.population_spec(config, 10))
    trainer = pt.PopulationTrainer(config, mesh=None)
    with pytest.raises(ValueError, match="per-client state"):
        trainer.train(population, num_clients=10, clients_per_round=2, noise_multiplier=0.0, rounds=1, seed=0)


def test_launch_tiny_writes_tables_and_resumes_per_cell(tmp_path):
    workdir = tmp_path / "mc"
    cmd = [sys.executable, "launch.py", "--config", "experiments/many_clients.py:tiny", "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONPATH": REPO}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert {c["z"] for c in summary["cells"].values()} == {0.0, 1.0}
    t = summary["tables"]
    assert len(t["ari_vs_k"]) == 2 and len(t["ari_vs_epsilon"]) == 2
    assert {"heldout/ari", "unseen_lab/ari"} <= set(t["ari_vs_k"][0])
    assert "ARI vs epsilon" in (workdir / "summary.md").read_text()
    assert (workdir / "ari_vs_epsilon.png").stat().st_size > 0 and (workdir / "ari_vs_k.png").stat().st_size > 0
    private = [r for r in t["ari_vs_epsilon"] if r["z"] > 0][0]
    assert 0 < private["epsilon_poisson_q"] < private["epsilon_without_sampling_amplification"]
    assert private["epsilon"] is not None and private["delta"] <= 1 / 1000
    # Resume: a finished cell is never rerun (its stored result is reused as is).
    cell = workdir / "cells" / "N1000_K4_z1_s0.json"
    stored = json.loads(cell.read_text())
    stored["timing"]["marker"] = "kept"
    del stored["epsilon_poisson_q"]  # a cell stored before that column: backfilled on resume
    cell.write_text(json.dumps(stored))
    (workdir / "cells" / "N1000_K4_z0_s0.json").unlink()  # as if killed during this cell
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["cells"]["N1000_K4_z1_s0"]["timing"]["marker"] == "kept"
    assert summary["cells"]["N1000_K4_z1_s0"]["epsilon_poisson_q"] == pytest.approx(private["epsilon_poisson_q"])
    assert "N1000_K4_z0_s0" in summary["cells"] and summary["status"] == "complete"


def test_parallel_rendering_gives_the_same_round_data():
    import concurrent.futures
    import multiprocessing

    pop = pop_lib.Population(_spec(50))
    ids = pt.sample_round_clients(0, 0, 50, 5)
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        parallel = pop.client_data(ids, ex)
    serial = pop.client_data(ids)
    for a, b in zip(parallel, serial):
        np.testing.assert_array_equal(a, b)
