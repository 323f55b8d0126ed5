"""Client learning-rate schedules (fl/optimizers.py make_schedule, base.with_client_lr_schedule): the
values (cosine endpoints, warmup), round r's clients training with schedule(r), and the config checks."""

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedtransfer_jax.fl import algorithms, optimizers
from fedtransfer_jax.fl.algorithms.base import LocalTraining, with_client_lr_schedule
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state
from fedtransfer_jax.runs import engine
from experiments import grains
from fl_toy import quad_data, quad_loss


def test_constant_is_none_and_cosine_endpoints():
    assert optimizers.make_schedule("constant", 0.1, 10) is None
    s = optimizers.make_schedule("cosine", 0.1, 10)
    np.testing.assert_allclose(float(s(0)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(s(5)), 0.05, rtol=1e-5)  # half way
    np.testing.assert_allclose(float(s(10)), 0.0, atol=1e-9)
    assert all(float(s(r)) > float(s(r + 1)) for r in range(9))  # decreasing
    s = optimizers.make_schedule("cosine", 0.1, 10, final_fraction=0.2)
    np.testing.assert_allclose(float(s(10)), 0.02, rtol=1e-5)


def test_warmup_rises_linearly_to_the_peak():
    s = optimizers.make_schedule("cosine", 0.3, 10, warmup_rounds=2)
    np.testing.assert_allclose([float(s(r)) for r in range(3)], [0.1, 0.2, 0.3], rtol=1e-5)
    assert float(s(3)) < 0.3 and float(s(10)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="linear"), r"fl\.lr_schedule: unknown schedule 'linear'"),
        (dict(warmup_rounds=10), r"fl\.lr_warmup_rounds must be in \[0, fl\.rounds=10\)"),
        (dict(final_fraction=2.0), r"fl\.lr_final_fraction must be in \[0, 1\]"),
    ],
)
def test_bad_schedules_name_the_key(kwargs, match):
    args = dict(name="cosine", lr=0.1, rounds=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        optimizers.make_schedule(args.pop("name"), args.pop("lr"), args.pop("rounds"), **args)


def _local(lr, steps=3):
    return LocalTraining(quad_loss, optax.adam(lr), local_steps=steps, batch_size=1)


@pytest.mark.parametrize("name", ["fedavg", "scaffold"])
def test_round_r_trains_with_schedule_r(name):
    lrs = jnp.array([0.05, 0.02, 0.01])
    build = lambda lr: algorithms.build_algorithm(name, _local(lr), client_lr=lr)
    scheduled = with_client_lr_schedule(build, lambda r: lrs[r])
    rf = build_round(scheduled, RoundConfig(3, "vmap"), seed=0)
    state = init_round_state(scheduled, {"w": jnp.zeros(2)}, 4)
    # Reference: round r run by the plain algorithm built with lr(r), from the same state (same round keys).
    ref = init_round_state(build(0.05), {"w": jnp.zeros(2)}, 4)
    for r in range(3):
        state, _ = rf(state, quad_data())
        ref, _ = build_round(build(float(lrs[r])), RoundConfig(3, "vmap"), seed=0)(ref, quad_data())
        chex.assert_trees_all_close(state.server, ref.server, rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(state.clients, ref.clients, rtol=1e-5, atol=1e-7)


def test_constant_config_builds_the_unscheduled_algorithm():
    config = grains.get_config("tiny")
    spec = engine.method_spec(config, "fedavg")
    alg = engine.build_method_algorithm(config, spec, lambda lr: _local(0.002 if lr is None else lr))
    assert alg.broadcast_at is None  # exactly the algorithm built before schedules existed
    config.fl.lr_schedule = "cosine"
    alg = engine.build_method_algorithm(config, spec, lambda lr: _local(0.002 if lr is None else lr))
    assert alg.broadcast_at is not None


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("fl.lr_schedule", "step", r"fl\.lr_schedule"),
        ("fl.lr_warmup_rounds", 2, r"fl\.lr_warmup_rounds"),
        ("eval.select", "best", r"eval\.select"),
        ("eval.every_rounds", -1, r"eval\.every_rounds"),
    ],
)
def test_validate_config_names_the_key(key, value, match):
    config = grains.get_config("tiny")  # 2 rounds
    config.fl.lr_schedule = "cosine"
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=match):
        engine.validate_config(config)


def test_best_val_without_validation_is_refused():
    config = grains.get_config("tiny")
    config.eval.select, config.eval.every_rounds = "best_val", 0
    with pytest.raises(ValueError, match=r"eval\.select='best_val' needs validation: set eval\.every_rounds"):
        engine.validate_config(config)
    engine.validate_config(grains.get_config("fair"))
    engine.validate_config(grains.get_config("default"))
