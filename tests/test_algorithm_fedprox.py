"""FedProx (fl/algorithms/fedprox.py) on the linear toy, against numpy SGD with the proximal term."""

import chex
import numpy as np

from fl_toy import client_xy, make_data, numpy_sgd_client, run_round


def test_fedprox_two_steps_matches_numpy():
    data = make_data([4, 4], n_max=4)
    state, _, _ = run_round(data, clients_per_round=2, local_steps=2, batch_size=4, mu=0.5)
    w0, b0 = np.array([0.1, -0.2, 0.3]), 0.05
    updated = [numpy_sgd_client(w0, b0, *client_xy(*data, c), lr=0.05, steps=2, mu=0.5) for c in range(2)]
    w_ref = (updated[0][0] + updated[1][0]) / 2
    b_ref = (updated[0][1] + updated[1][1]) / 2
    chex.assert_trees_all_close(state.params, {"w": w_ref, "b": b_ref}, rtol=1e-5, atol=1e-6)
    # And the proximal term matters: plain FedAvg lands elsewhere.
    plain, _, _ = run_round(data, clients_per_round=2, local_steps=2, batch_size=4, mu=0.0)
    assert not np.allclose(plain.params["w"], state.params["w"], atol=1e-6)
