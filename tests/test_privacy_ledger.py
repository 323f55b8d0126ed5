"""The privacy ledger sees everything that crosses the client boundary, and catches a leaked image."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.fl import algorithms
from fedtransfer_jax.fl.algorithms.base import ClientOutput, LocalTraining
from fedtransfer_jax.fl.boundary import PrivacyLedger, send_from_client
from fedtransfer_jax.fl.federated_round import RoundConfig, build_round, init_round_state

H = W = 8


def _data(c=3, n=2):
    rng = np.random.default_rng(0)
    return {
        "images": jnp.asarray(rng.uniform(size=(c, n, H, W, 3)).astype(np.float32)),
        "labels": jnp.asarray((rng.uniform(size=(c, n, H, W)) < 0.2).astype(np.uint8)),
        "mask": jnp.ones((c, n), bool),
    }


def _algorithm(leaky: bool):
    """FedAvg whose clients send a delta filled with their mean pixel value; the leaky variant also puts its
    first image into the message (a malicious or buggy client)."""
    alg = algorithms.fedavg(LocalTraining(lambda p, b, r: (0.0, {}), optax.sgd(1.0), 1, 1))

    def client_update(global_params, state, data, client_id, rng):
        del client_id, rng
        delta = jax.tree_util.tree_map(lambda p: jnp.full_like(p, data["images"].mean()), global_params)
        if leaky:
            delta = {**delta, "smuggled": data["images"][0]}
        return ClientOutput(delta, data["mask"].sum().astype(jnp.float32), state, jnp.float32(0.0))

    def server_update(state, mean, info):
        return alg.server_update(state, {k: v for k, v in mean.items() if k != "smuggled"}, info)

    return alg._replace(client_update=client_update, server_update=server_update)


def _run(leaky, params):
    ledger = PrivacyLedger(image_hw=(H, W), client_names=["a", "b", "c"])
    alg = _algorithm(leaky)
    round_fn = build_round(alg, RoundConfig(clients_per_round=2), seed=0, ledger=ledger)
    state, metrics = round_fn(init_round_state(alg, params, 3), _data())
    ledger.record_round(1, "model_update", np.asarray(metrics["client_ids"]))
    return ledger


def test_honest_round_sends_no_image_shaped_arrays():
    ledger = _run(False, {"w": jnp.zeros((3, 3, 3, 4)), "b": jnp.zeros((4,))})
    summary = ledger.summary()
    assert summary["image_shaped_arrays_sent"] is False
    # Two sampled clients each sent w (3*3*3*4 floats) + b (4) + their weight + their (weighted) loss.
    per_send = (108 + 4 + 1 + 1) * 4
    assert summary["bytes_sent_total"] == 2 * per_send
    assert sorted(v for v in summary["bytes_sent_per_client"].values() if v) == [per_send, per_send]
    names = {t["name"] for t in summary["tensors"]["model_update"]}
    assert names == {"model_update['x']['w']", "model_update['x']['b']", "model_update['w']", "model_update['loss']"}


def test_ledger_catches_an_image_smuggled_out_of_the_jitted_round():
    ledger = _run(True, {"w": jnp.zeros((3, 3, 3, 4)), "b": jnp.zeros((4,))})
    summary = ledger.summary()
    assert summary["image_shaped_arrays_sent"] is True
    assert summary["flagged_tensors"] == ["model_update['x']['smuggled']"]


def test_model_parameters_shaped_like_an_image_are_not_flagged():
    # A 3x3 conv with H in- and W out-channels has a kernel [3, 3, H, W]: the same shape as nine H x W
    # label maps. As a delta of the public model it is part of the message format, not data.
    ledger = _run(False, {"w": jnp.zeros((3, 3, H, W)), "b": jnp.zeros((W,))})
    assert ledger.summary()["image_shaped_arrays_sent"] is False
    # Without the published format the same kernel would be indistinguishable from label maps.
    bare = PrivacyLedger(image_hw=(H, W), client_names=["a"])
    send_from_client({"w": jnp.zeros((3, 3, H, W))}, bare, "model_update", client_id=0)
    assert bare.image_shaped_arrays_sent


def test_ledger_catches_a_label_map_sent_as_style_statistics():
    ledger = PrivacyLedger(image_hw=(H, W), client_names=["a", "b"])
    send_from_client({"adain_mean": jnp.zeros((4, 16))}, ledger, "style_stats", client_id=0)
    assert not ledger.image_shaped_arrays_sent
    send_from_client(
        {"adain_mean": jnp.zeros((4, 16)), "oops": jnp.zeros((2, H, W), jnp.uint8)},
        ledger,
        "style_stats",
        client_id=1,
    )
    summary = ledger.summary()
    assert summary["image_shaped_arrays_sent"] is True
    assert summary["flagged_tensors"] == ["style_stats['oops']"]
    assert summary["bytes_sent_per_client"] == {"a": 4 * 16 * 4, "b": 4 * 16 * 4 + 2 * H * W}
