"""What every method of a run shares, built once from the config: the data, the model, the mesh, the log."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedtransfer_jax.runtime import distributed, runlog
from fedtransfer_jax.runs import engine, inference
from fedtransfer_jax.data.clients import ClientData, FederatedData, as_uint8_images, whole_test_images
from fedtransfer_jax.fl import federated_round


@dataclasses.dataclass
class Context:
    config: ml_collections.ConfigDict
    workdir: str
    data: FederatedData
    model: Any
    loss_fn: Callable
    init_params: Any
    mesh: Any
    log: runlog.MetricsLog
    prob_fn: Callable  # jitted boundary probability, shared by every evaluation (one compilation)
    console: Any = None  # fedtransfer_jax.runtime.console.Console (progress display), or None
    style_artifacts: dict = dataclasses.field(default_factory=dict)  # per method: what the figures need
    final_params: dict = dataclasses.field(default_factory=dict)  # per method (per client for local)
    fingerprint: str = ""  # of the config parts that define the trained models
    on_checkpoint: Callable | None = None  # (federation tag, round, rounds) after each checkpoint save
    # eval.whole_images > 0: whole test micrographs per lab (data.clients.whole_test_images), seen and unseen
    whole_test: dict = dataclasses.field(default_factory=dict)
    whole_unseen: dict = dataclasses.field(default_factory=dict)
    whole_notes: list = dataclasses.field(default_factory=list)

    @property
    def fl(self):
        return self.config.fl


def make_mesh(config) -> Any:
    """A 1-D device mesh over the `clients` axis, or None on a single device."""
    n = jax.device_count()
    if not config.fl.get("shard_clients", True) or n == 1:
        return None
    return federated_round.make_client_mesh(n)


def place_clients(data: ClientData, mesh) -> dict:
    """Client arrays on device as the round's data dict; with a mesh, the client axis is sharded over it
    (padded to a multiple of the device count with empty clients, which are never sampled).

    8-bit training images go to the device as uint8 (4x less memory than float32: what lets thousands of
    clients stay resident) and are decoded per batch inside the local step (`run_local_training`), bit for
    bit the float32 values; other images (e.g. restyled ones) stay float32.

    With a mesh over several processes, every process holds the same host arrays (loaded from one tfds
    cache) and uploads only the shards of its own devices (`distributed.put`)."""
    arrays = dict(data._asdict())
    as_uint8 = as_uint8_images(arrays["images"])
    if as_uint8 is not None:
        arrays["images"] = as_uint8
    if mesh is None:
        return {k: jnp.asarray(v) for k, v in arrays.items()}
    return {k: federated_round.shard_client_axis(np.asarray(v), mesh) for k, v in arrays.items()}


def build_context(config: ml_collections.ConfigDict, workdir: str, console=None) -> Context:
    from fedtransfer_jax.data.clients import load_federated_data  # tfds is imported lazily there
    import tensorflow_datasets as tfds  # noqa: PLC0415

    tfds.disable_progress_bar()  # the run has its own progress display; tfds's goes nowhere useful
    data = load_federated_data(config.data, workdir)
    engine.check_batch_size(config, dict(zip(data.client_names, np.asarray(data.train.num_examples).tolist())))
    model = engine.build_model(config)
    tile = data.train.images.shape[2]
    return Context(
        config=config,
        workdir=workdir,
        data=data,
        model=model,
        loss_fn=engine.make_loss(config, model),
        init_params=distributed.from_primary(lambda: starting_params(config, model, tile)),
        mesh=make_mesh(config),
        # Every process runs the same rounds; only process 0 writes them down.
        log=runlog.MetricsLog(os.path.join(workdir, "metrics.jsonl"), enabled=distributed.is_primary()),
        prob_fn=inference.make_prob_fn(model),
        console=console,
        **whole_test_data(config, data),
    )


def starting_params(config: ml_collections.ConfigDict, model, tile: int):
    """The params every method starts from: the seed's random init, or a trained model's (`init_from`:
    'shipped' or a workdir; `init_from_method`), e.g. to fine-tune the shipped model on a lab's labels."""
    params = engine.init_params(config, model, tile)
    source = str(config.get("init_from", "") or "")
    if not source:
        return params
    loaded, _ = inference.initial_params(source, str(config.get("init_from_method", "") or ""), params)
    return jax.tree_util.tree_map(jnp.asarray, loaded)


def whole_test_data(config: ml_collections.ConfigDict, data: FederatedData) -> dict:
    """The Context's whole test images: `eval.whole_images` per seen and unseen synthetic lab, of
    `eval.whole_image_size` px (0 images, the default: none)."""
    ev = config.get("eval", None) or {}
    n, size = int(ev.get("whole_images", 0)), int(ev.get("whole_image_size", 256))
    if n <= 0:
        return {}
    seen, notes = whole_test_images(config.data, data.client_names, n, size)
    unseen, more = whole_test_images(config.data, list(data.unseen), n, size)
    return {"whole_test": seen, "whole_unseen": unseen, "whole_notes": notes + more}
