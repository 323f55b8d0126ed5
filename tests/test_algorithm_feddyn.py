"""FedDyn (fl/algorithms/feddyn.py) on the quadratic toy: dynamic regularisation removes client drift."""

import numpy as np

from fedtransfer_jax.fl import algorithms
from fl_toy import global_optimum, local, run


def test_feddyn_converges_to_the_optimum():
    state, _ = run(algorithms.feddyn(local(), alpha=0.5), 300)
    np.testing.assert_allclose(state.server.params["w"], global_optimum(), atol=1e-3)
