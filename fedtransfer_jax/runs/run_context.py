"""What every method of a run shares, built once from the config: the data, the model, the mesh, the log."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedtransfer_jax.runtime import distributed, io_utils, runlog
from fedtransfer_jax.runs import engine, inference
from fedtransfer_jax.data import prior_labs
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
    # Labs drawn from the population prior are rendered by their own module (data/prior_labs.py).
    load = prior_labs.load_federated_data if config.data.get("source") == "prior_labs" else load_federated_data
    data = load(config.data, workdir)
    engine.check_batch_size(config, dict(zip(data.client_names, np.asarray(data.train.num_examples).tolist())))
    model = engine.build_model(config)
    tile = data.train.images.shape[2]
    return Context(
        config=config,
        workdir=workdir,
        data=data,
        model=model,
        loss_fn=engine.make_loss(config, model),
        init_params=starting_params(config, model, tile, workdir),
        mesh=make_mesh(config),
        # Every process runs the same rounds; only process 0 writes them down.
        log=runlog.MetricsLog(os.path.join(workdir, "metrics.jsonl"), enabled=distributed.is_primary()),
        prob_fn=inference.make_prob_fn(model),
        console=console,
        **whole_test_data(config, data),
    )


INIT_FROM_FILE = "init_from.json"


def starting_params(config: ml_collections.ConfigDict, model, tile: int, workdir: str | None = None):
    """The params every method starts from: the seed's random init (computed on process 0, broadcast), or a
    trained model's (`init_from`: 'shipped' or a workdir; `init_from_method`), e.g. to fine-tune the shipped
    model on a lab's labels. A trained model is restored by every process (orbax's restore is collective).

    With `workdir`, where the params came from and their digest go to `<workdir>/init_from.json` at the first
    start; a resume whose source now holds other params (re-exported, retrained) stops with a message
    naming `init_from` instead of training the remaining methods from a different start."""
    source = str(config.get("init_from", "") or "")
    if not source:
        return distributed.from_primary(lambda: engine.init_params(config, model, tile))
    template = jax.eval_shape(lambda: engine.init_params(config, model, tile))
    loaded, provenance = inference.initial_params(
        source, str(config.get("init_from_method", "") or ""), template, config
    )
    provenance["digest"] = params_digest(loaded)
    if workdir:
        path = os.path.join(workdir, INIT_FROM_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                recorded = json.load(f)
            if recorded.get("digest") != provenance["digest"]:
                raise ValueError(
                    f"config key init_from: {source!r} now holds other params than when this workdir started "
                    f"({recorded.get('workdir')}, {recorded.get('method')}, round {recorded.get('round')}; see "
                    f"{path}): restore that model, or start a new --workdir"
                )
        elif distributed.is_primary():
            io_utils.write_json_atomic(path, provenance)
    return jax.tree_util.tree_map(jnp.asarray, loaded)


def params_digest(params) -> str:
    """sha256 over the params' leaves (paths, dtypes, shapes, bytes): which model a run started from."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def whole_test_data(config: ml_collections.ConfigDict, data: FederatedData) -> dict:
    """The Context's whole test images: `eval.whole_images` per seen and unseen synthetic lab, of
    `eval.whole_image_size` px (0 images, the default: none)."""
    ev = config.get("eval", None) or {}
    n, size = int(ev.get("whole_images", 0)), int(ev.get("whole_image_size", 256))
    if n <= 0:
        return {}
    whole = prior_labs.whole_test_images if config.data.get("source") == "prior_labs" else whole_test_images
    seen, notes = whole(config.data, data.client_names, n, size)
    unseen, more = whole(config.data, list(data.unseen), n, size)
    return {"whole_test": seen, "whole_unseen": unseen, "whole_notes": notes + more}
