"""A round sharded over 4 host devices (shard_map over the `clients` axis, each device scanning or vmapping its\nshare) equals the same round on 1 device, for every strategy, with padding slots and dropouts.

Runs in a subprocess because the host device count is fixed when JAX starts
(XLA_FLAGS=--xla_force_host_platform_device_count=4).
"""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np, optax, chex
    from jax.sharding import NamedSharding, PartitionSpec as P
    from fedtransfer_jax import models
    from fedtransfer_jax.fl import algorithms
    from fedtransfer_jax.fl.algorithms.base import LocalTraining
    from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state, CLIENT_AXIS, make_client_mesh
    from fedtransfer_jax.models.unet import UNet
    assert jax.device_count() == 4, jax.devices()
    # One U-Net level: what is compared is the round's sharding (every parameter, equal to the 1-device round);
    # a second level doubles the compile time of each of the 20 rounds and adds no sharding path.
    model = UNet(features=(4,), groups=2)
    loss_fn = models.make_segmentation_loss(model, boundary_weight=3.0, dice_weight=1.0)
    rng = np.random.default_rng(0)
    C, N = 8, 3
    images = rng.uniform(size=(C, N, 16, 16, 3)).astype(np.float32)
    labels = (rng.uniform(size=(C, N, 16, 16)) < 0.2).astype(np.uint8)
    mask = np.ones((C, N), bool); mask[3, 1:] = False; mask[5] = False
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    results = {}
    # SCAFFOLD with SGD (its control-variate update assumes SGD local steps).
    for name, opt, lr in (("fedavg", optax.adam, 1e-2), ("scaffold", optax.sgd, 0.05)):
     local = LocalTraining(loss_fn, opt(lr), local_steps=2, batch_size=2)
     alg = algorithms.build_algorithm(name, local, client_lr=lr)
     # K=4 on 4 devices: one client each; K=3 with dropout: a padding slot and skipped (dropped) clients.
     for k, strategy, chunk, drop in ((4, "vmap", 0, 0.0), (4, "chunked", 4, 0.0), (4, "sequential", 0, 0.0),
                                      (3, "vmap", 0, 0.3), (3, "sequential", 0, 0.3)):
      for mesh in (None, make_client_mesh(4)):
        traces = []
        rf = build_round(alg, RoundConfig(k, strategy, chunk, drop), seed=0, mesh=mesh,
                         on_trace=lambda: traces.append(1))
        arrays = dict(images=images, labels=labels, mask=mask)
        if mesh is None:
          data = {k: jnp.asarray(a) for k, a in arrays.items()}
        else:
          sh = NamedSharding(mesh, P(CLIENT_AXIS))
          data = {k: jax.device_put(a, sh) for k, a in arrays.items()}
        state = init_round_state(alg, params, C, mesh=mesh)
        for _ in range(2):
          state, m = rf(state, data)
        assert len(traces) == 1, (name, strategy, len(traces))
        results[(name, k, strategy, mesh is None)] = (jax.device_get(state.server.params), np.asarray(m["client_ids"]),
                                                   jax.device_get(state.clients))
    for key, (p, ids, clients) in results.items():
      ref = results[(key[0], key[1], "vmap", True)]
      np.testing.assert_array_equal(ids, ref[1])
      chex.assert_trees_all_close(p, ref[0], rtol=2e-5, atol=2e-6)
      # SCAFFOLD's control variates are deltas scaled by 1/(local_steps * lr) = 10: tolerance scaled alike.
      chex.assert_trees_all_close(clients, ref[2], rtol=2e-4, atol=2e-5)
    print("OK", len(results))
""")


def test_round_on_four_host_devices_equals_one_device():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", PYTHONPATH=REPO, JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "OK 20" in proc.stdout  # 2 algorithms x 5 (K, strategy, dropout) x (1 device, 4-device mesh)
