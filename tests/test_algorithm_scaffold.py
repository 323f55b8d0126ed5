"""SCAFFOLD (fl/algorithms/scaffold.py) on the quadratic toy: it removes FedAvg's client drift."""

import jax.numpy as jnp
import numpy as np

from fedtransfer_jax.fl import algorithms
from fl_toy import LR, global_optimum, local, run


def test_scaffold_converges_to_the_optimum():
    # FedAvg converges to a biased point on this toy (test_algorithm_fedavg.py); SCAFFOLD to the optimum.
    scaffold_state, _ = run(algorithms.scaffold(local(), client_lr=LR), 150)
    np.testing.assert_allclose(scaffold_state.server.params["w"], global_optimum(), atol=1e-4)


def test_scaffold_client_state_only_changes_for_sampled_survivors():
    alg = algorithms.scaffold(local(), client_lr=LR)
    state, hist = run(alg, 1, k=2)
    ids = set(np.asarray(hist[0]["client_ids"]).tolist())
    for c in range(4):
        changed = float(jnp.abs(state.clients["w"][c]).sum()) > 0
        assert changed == (c in ids), (c, ids)
