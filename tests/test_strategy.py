"""fl.strategy: the plan `auto` picks for a backend and a memory budget (pure functions, fake memory models),
the memory model fitted from compiled rounds, and that the plans it picks compute the same round."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedtransfer_jax.fl import strategy as S

MiB = 2.0**20


def test_explicit_strategies_are_taken_as_given():
    assert S.resolve("vmap", 10) == S.Plan("vmap", 10, 1)
    assert S.resolve("sequential", 10) == S.Plan("sequential", 1, 10)
    assert S.resolve("chunked", 10, 4)[:3] == ("chunked", 4, 3)  # 4 + 4 + 2 (padded): as asked
    assert S.resolve("chunked", 10)[:3] == ("chunked", 10, 1)  # no chunk size: all at once
    model = S.MemoryModel(fixed=100.0, per_chunk_client=10.0)
    plan = S.resolve("vmap", 10, memory=model, budget_bytes=150.0)
    assert (
        plan.strategy == "vmap" and plan.peak_bytes == 200.0 and plan.fits is False
    )  # annotated, not changed


def test_auto_on_cpu_is_sequential_whatever_the_memory():
    plan = S.resolve("auto", 256, backend="cpu", memory=S.MemoryModel(0.0, 1.0), budget_bytes=1e12)
    assert plan[:3] == ("sequential", 1, 256)


def test_auto_on_gpu_takes_the_largest_chunk_up_to_the_cap():
    assert S.resolve("auto", 256, backend="gpu")[:3] == ("chunked", S.GPU_CHUNK_CAP, 256 // S.GPU_CHUNK_CAP)
    assert S.resolve("auto", 8, backend="gpu")[:3] == ("vmap", 8, 1)  # fewer clients than the cap
    assert S.resolve("auto", 100, backend="gpu")[:3] == ("chunked", 25, 4)  # balanced: no padded 4th chunk
    assert S.resolve("auto", 256, backend="gpu", chunk_cap=64)[:3] == ("chunked", 64, 4)


@pytest.mark.parametrize(
    "budget_mib,expected_chunk", [(10_000, 32), (1_000 + 25.6 + 16 * 50 + 10, 16), (1_080, 1)]
)
def test_auto_fits_the_budget(budget_mib, expected_chunk):
    """Fake model: 1000 MiB fixed, 50 MiB per vmapped client, ~0.1 MiB per sampled client, K = 256."""
    model = S.MemoryModel(fixed=1000 * MiB, per_chunk_client=50 * MiB, per_sampled_client=0.1 * MiB)
    plan = S.resolve("auto", 256, backend="gpu", memory=model, budget_bytes=budget_mib * MiB)
    assert plan.chunk == expected_chunk and plan.fits
    assert plan.peak_bytes == model.peak_bytes(plan.chunk, 256) <= budget_mib * MiB
    # ... and it is the largest: one more client per chunk (before balancing) would not fit or hits the cap.
    assert plan.chunk == S.GPU_CHUNK_CAP or model.peak_bytes(plan.chunk + 1, 256) > budget_mib * MiB


def test_auto_falls_back_to_sequential_when_nothing_fits():
    model = S.MemoryModel(fixed=1000 * MiB, per_chunk_client=50 * MiB)
    plan = S.resolve("auto", 64, backend="gpu", memory=model, budget_bytes=500 * MiB)
    assert plan[:3] == ("sequential", 1, 64) and plan.fits is False and "none fits" in plan.reason


@pytest.mark.parametrize("k", [1, 7, 31, 32, 33, 100, 256, 4096])
@pytest.mark.parametrize("cap", [1, 5, 32])
def test_balanced_chunk_never_grows_and_keeps_the_scan_length(k, cap):
    c = S.balanced_chunk(k, cap)
    assert 1 <= c <= min(k, cap)
    assert math.ceil(k / c) == math.ceil(k / min(k, cap))


def test_largest_chunk_and_memory_budget():
    model = S.MemoryModel(fixed=100.0, per_chunk_client=10.0, per_sampled_client=1.0)
    assert model.largest_chunk(10, budget_bytes=100.0 + 10.0 + 35.0) == 3
    assert model.largest_chunk(10, budget_bytes=50.0) == 0
    assert S.MemoryModel(1.0, 0.0).largest_chunk(7, 2.0) == 7
    assert 0 < S.memory_budget_bytes(fraction=0.5) <= S.host_available_bytes()


def test_fit_memory_model_recovers_a_linear_plan():
    truth = S.MemoryModel(fixed=1e6, per_chunk_client=3e4, per_sampled_client=5e2)
    points = {kc: truth.peak_bytes(kc[1], kc[0]) for kc in S.PROBE_POINTS}
    got = S.fit_memory_model(points)
    np.testing.assert_allclose(got[:3], truth[:3], rtol=1e-9)
    with pytest.raises(ValueError, match="fit_memory_model"):
        S.fit_memory_model({(8, 2): 1.0, (16, 2): 2.0, (16, 4): 3.0})


def test_analytic_memory_model_hand_count():
    m = S.analytic_memory_model(
        num_params=10,
        activation_bytes_per_image=100.0,
        batch_size=2,
        data_bytes_per_client=1000.0,
        num_clients=3,
        optimizer_slots=2,
        client_state_params=10,
    )
    assert m.per_chunk_client == 4 * 10 * (S.PARAM_COPIES + 2) + 2 * 100.0
    assert m.per_sampled_client == 4 * 10
    assert m.fixed == 3 * (1000.0 + 4 * 10) + 4 * (10 * 4 + 10)


# ------------------------------------------------------------------------- with a compiled round (tiny)


def _tiny_round_parts():
    import optax

    from fedtransfer_jax.fl import algorithms
    from fedtransfer_jax.fl.algorithms.base import LocalTraining

    def loss_fn(params, batch, rng):
        del rng
        x = batch["images"].reshape(batch["images"].shape[0], -1)
        err = (x @ params["w"]).squeeze(-1) - batch["labels"].reshape(x.shape[0], -1).mean(-1)
        m = batch["mask"].astype(jnp.float32)
        return (jnp.square(err) * m).sum() / jnp.maximum(m.sum(), 1.0), {}

    c, n = 16, 4
    rng = np.random.default_rng(0)
    data = {
        "images": jnp.asarray(rng.integers(0, 256, (c, n, 4, 4, 3), dtype=np.uint8)),
        "labels": jnp.asarray(rng.integers(0, 2, (c, n, 4, 4), dtype=np.uint8)),
        "mask": jnp.ones((c, n), bool),
    }
    params = {"w": jnp.asarray(rng.standard_normal((48, 1)) * 0.1, jnp.float32)}
    alg = algorithms.fedavg(LocalTraining(loss_fn, optax.sgd(0.1), 2, 2), optax.sgd(1.0))
    return alg, params, data


def test_probe_memory_model_and_every_plan_computes_the_same_round():
    from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state, round_compiler

    alg, params, data = _tiny_round_parts()
    compile_round = round_compiler(alg, params, data, seed=0)
    model = S.probe_memory_model(compile_round)
    assert model.source == "probe" and model.per_chunk_client >= 0 and model.per_sampled_client >= 0
    # The fixed part holds at least the arguments (all 16 clients' data and the state).
    assert model.fixed >= sum(x.nbytes for x in jax.tree_util.tree_leaves(data))
    # A point the probe did not compile is predicted within 25 % of XLA's own plan.
    measured = S.compiled_peak_bytes(compile_round(12, 3))
    assert abs(model.peak_bytes(3, 12) - measured) <= 0.25 * measured
    budget = model.peak_bytes(5, 12)
    probed = S.plan_round("auto", 12, compile_round=compile_round, backend="gpu", budget_bytes=budget)
    assert probed.fits and probed.peak_bytes == pytest.approx(model.peak_bytes(probed.chunk, 12))
    plans = [
        S.plan_round("auto", 12, backend="gpu", memory=model, budget_bytes=1e12, chunk_cap=c)
        for c in (1, 5, 12)
    ]
    assert [p[:3] for p in plans] == [("sequential", 1, 12), ("chunked", 4, 3), ("vmap", 12, 1)]
    results = []
    for plan in plans:
        fn = build_round(alg, RoundConfig(12, plan.strategy, plan.chunk), seed=0)
        new_state, metrics = fn(init_round_state(alg, params, 16), data)
        results.append((alg.get_params(new_state.server), metrics["loss"]))
    for got in results[1:]:
        chex.assert_trees_all_close(got, results[0], atol=1e-6, rtol=1e-5)


def test_probe_points_scale_with_the_federation():
    assert S.probe_points(4096) == S.PROBE_POINTS
    pts = S.probe_points(5)
    assert (
        max(k for k, _ in pts) <= 5
        and S.fit_memory_model({kc: 1.0 + kc[1] for kc in pts}).per_chunk_client == 1.0
    )
    assert S.probe_points(3) is None and S.probe_memory_model(lambda k, c: None, None) is None


def test_plan_round_on_cpu_compiles_nothing():
    def boom(k, chunk):
        raise AssertionError("the CPU plan must not compile a probe")

    assert S.plan_round("auto", 64, compile_round=boom, backend="cpu")[:3] == ("sequential", 1, 64)
    assert S.plan_round("vmap", 64, compile_round=boom, backend="gpu")[:3] == ("vmap", 64, 1)
