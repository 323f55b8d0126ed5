"""The centralized baseline's pooled trainer (federated_round.build_pooled_round, runners.run_centralized):
one optimizer whose state persists across rounds (R rounds of S steps = one uninterrupted R x S-step run),
checkpointed and restored on resume, the same examples seen as the federated methods."""

import os

import chex
import jax
import jax.numpy as jnp
import optax

from fedtransfer_jax.fl.algorithms.base import LocalTraining, run_local_steps
from fedtransfer_jax.fl.federated_round import build_pooled_round, init_pooled_state
from fedtransfer_jax.runs import train
from fedtransfer_jax.runtime import checkpointing
from experiments import grains
from fl_toy import quad_data, quad_loss

S = 5


def _local_at(steps=S):
    return lambda lr: LocalTraining(quad_loss, optax.adam(0.05 if lr is None else lr), local_steps=steps, batch_size=1)


def test_adam_state_persists_two_rounds_equal_one_uninterrupted_run():
    data = quad_data(1)  # one client, one example: every batch is the same, so the step order is all there is
    traces = []
    round_fn = build_pooled_round(_local_at(), seed=0, on_trace=lambda: traces.append(1))
    state = init_pooled_state(optax.adam(0.05), {"w": jnp.zeros(2)})
    for _ in range(2):
        state, metrics = round_fn(state, data)
    adam = state.clients[0]
    assert int(adam.count) == 2 * S  # never reset between rounds (a one-client FedAvg round would give S)
    assert len(traces) == 1 and int(state.round) == 2
    lt = _local_at(2 * S)(None)
    params, opt_state, _ = run_local_steps(
        lt, {"w": jnp.zeros(2)}, lt.optimizer.init({"w": jnp.zeros(2)}), {k: v[0] for k, v in data.items()},
        jnp.int32(0), jax.random.PRNGKey(1),
    )
    chex.assert_trees_all_close(state.server, params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(adam.mu, opt_state[0].mu, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(adam.nu, opt_state[0].nu, rtol=1e-6, atol=1e-7)


def test_schedule_sets_round_r_lr_and_keeps_the_state():
    data = quad_data(1)
    lrs = jnp.array([0.05, 0.01])
    round_fn = build_pooled_round(_local_at(), seed=0, schedule=lambda r: lrs[r])
    state = init_pooled_state(optax.adam(0.05), {"w": jnp.zeros(2)})
    state, _ = round_fn(state, data)
    state, _ = round_fn(state, data)
    # Reference: S steps at 0.05 then S at 0.01 continuing the same Adam state.
    d = {k: v[0] for k, v in data.items()}
    p = {"w": jnp.zeros(2)}
    st = optax.adam(0.05).init(p)
    for lr in (0.05, 0.01):
        p, st, _ = run_local_steps(_local_at()(lr), p, st, d, jnp.int32(0), jax.random.PRNGKey(1))
    chex.assert_trees_all_close(state.server, p, rtol=1e-6, atol=1e-7)
    assert int(state.clients[0].count) == 2 * S


def _config(tfds_dir, rounds):
    config = grains.get_config("tiny")
    config.methods = ("centralized",)
    config.figures = False
    config.data.tfds_dir = str(tfds_dir)
    config.fl.rounds = rounds
    return config


def _restored_state(workdir):
    mngr = checkpointing.manager(os.path.join(workdir, "checkpoints", "centralized"), 1)
    try:
        meta_step = mngr.latest_step()
        restored = mngr.restore(meta_step, args=checkpointing.ocp.args.Composite(state=checkpointing.ocp.args.StandardRestore()))
    finally:
        mngr.close()
    return restored.state, meta_step


def test_centralized_resume_continues_the_optimizer_state(tmp_path):
    tfds = tmp_path / "tfds"
    straight = train.train_and_evaluate(_config(tfds, 2), str(tmp_path / "straight"))
    train.train_and_evaluate(_config(tfds, 1), str(tmp_path / "resumed"))
    resumed = train.train_and_evaluate(_config(tfds, 2), str(tmp_path / "resumed"))  # training longer resumes
    entry = resumed["methods"]["centralized"]
    assert entry["resumed_from_round"] == 1
    # Examples seen: rounds x K x local_steps x batch_size, as a federated method with K clients per round.
    cfg = _config(tfds, 2)
    steps = cfg.fl.local_steps * cfg.fl.clients_per_round
    assert entry["trainer"] == {
        "kind": "pooled",
        "steps_per_round": steps,
        "batch_size": cfg.fl.batch_size,
        "examples_seen": 2 * steps * cfg.fl.batch_size,
        "optimizer_state": "persists across rounds",
    }
    assert entry["mean"] == straight["methods"]["centralized"]["mean"]
    for name in ("straight", "resumed"):
        state, step = _restored_state(str(tmp_path / name))
        assert step == 2
        adam = state["clients"][0]
        count = adam["count"] if isinstance(adam, dict) else adam[0]
        assert int(count) == 2 * steps  # restored at round 1 and continued, never reset
