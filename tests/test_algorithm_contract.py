"""What every registered algorithm (fl.algorithms.REGISTRY) promises, on the quadratic toy: its defaults,
a build from them alone, one jitted round, one compilation and the same result for every client strategy,
and config errors that name the key. A newly registered algorithm is tested here without edits."""

import chex
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import Algorithm, LocalTraining
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state
from fl_toy import LR, local, quad_data, quad_loss, run


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_defaults_build_and_one_round(name):
    defaults = algorithms.REGISTRY[name].defaults
    assert isinstance(defaults, dict)
    assert algorithms.resolve_hparams(name, {}, "k") == defaults
    alg = algorithms.build_algorithm(name, local(), client_lr=LR)
    assert isinstance(alg, Algorithm) and alg.name == name
    state, hist = run(alg, 1, k=2)
    w = np.asarray(alg.get_params(state.server)["w"])
    assert w.shape == (2,) and np.all(np.isfinite(w)) and np.any(w != 0)  # the round moved the model
    assert int(hist[0]["num_survivors"]) == 2


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_every_algorithm_compiles_once_and_is_strategy_independent(name):
    lt = LocalTraining(quad_loss, optax.sgd(LR), local_steps=3, batch_size=1)
    alg = algorithms.build_algorithm(name, lt, client_lr=LR)
    results = {}
    for strategy, chunk in (("vmap", 0), ("sequential", 0), ("chunked", 2)):
        traces = []
        rf = build_round(alg, RoundConfig(3, strategy, chunk), seed=0, on_trace=lambda: traces.append(1))
        state = init_round_state(alg, {"w": jnp.zeros(2)}, 4)
        for _ in range(3):
            state, _ = rf(state, quad_data())
        assert len(traces) == 1
        results[strategy] = state
    for strategy in ("sequential", "chunked"):
        chex.assert_trees_all_close(results[strategy], results["vmap"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", algorithms.NAMES)
def test_unknown_hyperparameter_names_the_key(name):
    with pytest.raises(ValueError, match=rf"method_specs\.m\.hparams\.not_a_hparam: algorithm '{name}'"):
        algorithms.build_algorithm(name, local(), {"not_a_hparam": 1.0}, key="method_specs.m.hparams")


def test_unknown_hyperparameter_and_algorithm_errors():
    with pytest.raises(ValueError, match=r"method_specs\.fedprox_big\.alpha"):
        algorithms.build_algorithm("fedprox", local(), {"alpha": 1.0}, key="method_specs.fedprox_big")
    with pytest.raises(ValueError, match="unknown algorithm"):
        algorithms.build_algorithm("fedsomething", local())
