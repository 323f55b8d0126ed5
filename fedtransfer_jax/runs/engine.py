"""Engine assembly from the config: the model and its loss, a method's spec (algorithm + its own
hyper-parameters + aggregation), the local training every client runs, and the one-jit round.

A method in `config.methods` is a name; `config.method_specs.<name>` says what it is:

    kind        'federated' (default) | 'local' (each client alone) | 'centralized' (pooled data)
    algorithm   a name of fl.algorithms.REGISTRY (fedavg, fedprox, scaffold, ...)
    hparams     that algorithm's hyper-parameters (its defaults fill the rest; unknown keys are errors)
    style       '' or a style-sharing method (FedTransfer); the segmenter trains on restyled batches
    aggregator  {'name': 'mean'} (example-weighted) or {'name': 'dp', ...} (DP-FedAvg, privacy/dp.py)
    secure      {'enabled': False, ...}: secure aggregation of the client messages (privacy/secagg.py)
    dpsgd       {} (off) or {'noise_multiplier', 'clip_norm', 'units_per_batch', ...}: example-level DP
                inside every client, DP-SGD with per-micrograph clipping (privacy/dpsgd.py, DPSGD_KEYS)

A name without a spec is the algorithm of that name (or the `local` / `centralized` baseline). Inference
uses `params_template` to restore a model without rebuilding any optimizer.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging as absl_logging

from fedtransfer_jax import models
from fedtransfer_jax.data import augment as augment_lib
from fedtransfer_jax.data import intensity
from fedtransfer_jax.fl import aggregators as agg_lib
from fedtransfer_jax.fl import algorithms, optimizers, federated_round, strategy as strategy_lib
from fedtransfer_jax.fl.algorithms import base as base_lib
from fedtransfer_jax.fl.algorithms.base import BatchTransform, LocalTraining

KINDS = ("federated", "local", "centralized")
SELECT = ("last", "best_val")  # eval.select: which params a method is scored with
AGGREGATORS = ("mean", "dp")
# Keys of a 'dp' aggregator spec that configure the accountant (privacy/accounting.py), with defaults.
ACCOUNTING_KEYS = {"delta": 1e-5, "accountant": "rdp"}
_SPEC_KEYS = ("kind", "algorithm", "hparams", "style", "style_targets", "aggregator", "secure", "dpsgd")
# A method's `dpsgd` spec (privacy/dpsgd.py), with defaults; the first three have none.
DPSGD_KEYS = {
    "noise_multiplier": None,  # z: noise std z C on the sum of a step's clipped micrograph gradients
    "clip_norm": None,  # C: L2 clip of each micrograph's gradient
    "units_per_batch": None,  # B: expected micrographs per step (Poisson rate q = B / the lab's micrographs)
    "tiles_per_unit": 1,  # consecutive tiles of a client's data that form one micrograph
    "max_units_per_step": 0,  # physical batch cap (0: exact Poisson sampling); its truncation goes into delta
    "delta": 1e-5,
    "accountant": "rdp",
}
_INIT_TAG = 0x1217  # fold_in tag of the segmenter's init key


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str = "federated"
    algorithm: str = "fedavg"
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    style: str = ""
    style_targets: str = "foreign"
    aggregator: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"name": "mean"})
    secure: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"enabled": False})
    dpsgd: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # empty: no example-level DP

    @property
    def federated(self) -> bool:
        return self.kind == "federated"

    def as_dict(self) -> dict:
        out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataclasses.asdict(self).items()}
        if not out["dpsgd"]:  # absent when off: specs recorded before the key existed compare equal
            del out["dpsgd"]
        return out


def _plain(x) -> Any:
    return x.to_dict() if isinstance(x, ml_collections.ConfigDict) else x


def method_spec(config: ml_collections.ConfigDict, name: str) -> MethodSpec:
    """The spec of method `name` (validated; errors name the config key)."""
    specs = config.get("method_specs", None) or {}
    key = f"method_specs.{name}"
    if name in specs:
        raw = dict(_plain(specs[name]))
    elif name in ("local", "centralized"):
        raw = {"kind": name}
    elif name in algorithms.NAMES:
        raw = {"algorithm": name}
    else:
        known = sorted(set(specs) | set(algorithms.NAMES) | {"local", "centralized"})
        raise ValueError(f"config key methods: unknown method {name!r}; define {key} or choose from {known}")
    unknown = sorted(set(raw) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"config key {key}.{unknown[0]}: unknown; a method spec has {list(_SPEC_KEYS)}")
    spec = MethodSpec(
        name=name,
        kind=raw.get("kind", "federated") or "federated",
        algorithm=raw.get("algorithm", "fedavg") or "fedavg",
        hparams=dict(_plain(raw.get("hparams", {})) or {}),
        style=raw.get("style", "") or "",
        style_targets=raw.get("style_targets", "foreign") or "foreign",
        aggregator=dict(_plain(raw.get("aggregator", {})) or {"name": "mean"}),
        secure=dict(_plain(raw.get("secure", {})) or {"enabled": False}),
        dpsgd=_dpsgd_spec(_plain(raw.get("dpsgd", {})) or {}, f"{key}.dpsgd"),
    )
    if spec.kind not in KINDS:
        raise ValueError(f"config key {key}.kind: unknown kind {spec.kind!r}; choose from {KINDS}")
    algorithms.resolve_hparams(spec.algorithm, spec.hparams, f"{key}.hparams")
    from fedtransfer_jax.style.techniques import TECHNIQUE_NAMES as style_names  # noqa: PLC0415 (the registry)
    from fedtransfer_jax.style.techniques import TARGET_MODES  # noqa: PLC0415

    if spec.style and spec.style not in style_names:
        raise ValueError(f"config key {key}.style: unknown style technique {spec.style!r}; choose from {style_names}")
    if spec.style_targets not in TARGET_MODES:
        raise ValueError(
            f"config key {key}.style_targets: unknown {spec.style_targets!r}; choose from {TARGET_MODES}"
        )
    if spec.aggregator.get("name", "mean") not in AGGREGATORS:
        raise ValueError(
            f"config key {key}.aggregator.name: unknown aggregator {spec.aggregator.get('name')!r}; "
            f"choose from {AGGREGATORS}"
        )
    if spec.dpsgd and not spec.federated:
        raise ValueError(f"config key {key}.dpsgd: example-level DP is built for federated methods only")
    if not spec.federated and (spec.style or spec.aggregator.get("name", "mean") != "mean"):
        raise ValueError(f"config key {key}: a {spec.kind!r} baseline shares nothing: no style or aggregator")
    return spec


def _dpsgd_spec(raw: Mapping[str, Any], key: str) -> dict:
    """A method's `dpsgd` spec with its defaults filled ({} when off); errors name the config key."""
    if not raw:
        return {}
    unknown = sorted(set(raw) - set(DPSGD_KEYS))
    if unknown:
        raise ValueError(f"config key {key}.{unknown[0]}: unknown; dpsgd has {list(DPSGD_KEYS)}")
    missing = [k for k, v in DPSGD_KEYS.items() if v is None and k not in raw]
    if missing:
        raise ValueError(f"config key {key}.{missing[0]}: required for example-level DP (privacy/dpsgd.py)")
    out = {k: raw.get(k, d) for k, d in DPSGD_KEYS.items()}
    for k, lo, strict in (("noise_multiplier", 0.0, False), ("clip_norm", 0.0, True), ("units_per_batch", 0.0, True)):
        v = float(out[k])
        if not math.isfinite(v) or v < lo or (strict and v == lo):
            raise ValueError(f"config key {key}.{k}: must be {'>' if strict else '>='} {lo:g}, got {out[k]!r}")
    if int(out["tiles_per_unit"]) < 1 or int(out["max_units_per_step"]) < 0:
        raise ValueError(f"config key {key}: tiles_per_unit must be >= 1 and max_units_per_step >= 0")
    if not 0.0 < float(out["delta"]) < 1.0:
        raise ValueError(f"config key {key}.delta: must lie in (0, 1), got {out['delta']!r}")
    if out["accountant"] not in ("rdp", "pld"):
        raise ValueError(f"config key {key}.accountant: choose 'rdp' or 'pld', got {out['accountant']!r}")
    return out


def dpsgd_mechanism(spec: MethodSpec):
    """The method's privacy/dpsgd.DPSGD, or None when it has no example-level DP."""
    if not spec.dpsgd:
        return None
    from fedtransfer_jax.privacy import dpsgd  # noqa: PLC0415 (only DP-SGD runs need it)

    d = spec.dpsgd
    return dpsgd.DPSGD(
        clip_norm=float(d["clip_norm"]),
        noise_multiplier=float(d["noise_multiplier"]),
        units_per_batch=float(d["units_per_batch"]),
        tiles_per_unit=int(d["tiles_per_unit"]),
        max_units_per_step=int(d["max_units_per_step"]),
    )


# ----------------------------------------------------------------------------------------------------------
# Model.
# ----------------------------------------------------------------------------------------------------------
def build_model(config: ml_collections.ConfigDict):
    return models.build_model(config.model)


def make_loss(config: ml_collections.ConfigDict, model) -> Callable:
    return models.make_segmentation_loss(
        model,
        boundary_weight=config.loss.boundary_weight,
        dice_weight=config.loss.dice_weight,
        cldice_weight=config.loss.get("cldice_weight", 0.0),
    )


def init_params(config: ml_collections.ConfigDict, model, tile: int):
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), _INIT_TAG)
    return model.init(key, jnp.zeros((1, tile, tile, 3), jnp.float32))["params"]


def params_template(config: ml_collections.ConfigDict):
    """Shapes and dtypes of the segmenter's params (no computation): what inference restores into."""
    model = build_model(config)
    tile = int(config.data.tile_size)
    return jax.eval_shape(lambda: init_params(config, model, tile))


# ----------------------------------------------------------------------------------------------------------
# Algorithm, aggregation, round.
# ----------------------------------------------------------------------------------------------------------
def local_training(
    config: ml_collections.ConfigDict,
    loss_fn: Callable,
    *,
    local_steps: int | None = None,
    batch_transform: BatchTransform | None = None,
    lr: Any = None,
    augment: bool = True,
    dpsgd: Any = None,
) -> LocalTraining:
    """The local training every client runs: `batch_transform` (the style re-rendering) first, then
    `config.augment` (data/augment.py) unless disabled there or here (`augment=False`: a style technique's
    own model, which must learn the labs' real imaging styles). `lr`: None = fl.client_lr, or a number, or
    a traced array (a learning-rate schedule's value inside the jitted round). `dpsgd`: a privacy/dpsgd.DPSGD
    (`dpsgd_mechanism`): every local step is then a DP-SGD step over the client's micrographs (the
    minibatch and `fl.batch_size` are not used; the optimizer sees the noised gradient)."""
    if augment:
        batch_transform = augment_lib.make_batch_transform(augmentation(config), batch_transform)
    fl = config.fl
    optimizer = optimizers.make_optimizer(
        fl.client_optimizer,
        float(fl.client_lr) if lr is None else (lr if isinstance(lr, jax.Array) else float(lr)),
        float(fl.get("client_momentum", 0.0)),
        clip_norm=float(fl.get("clip_norm", 0.0)),
        key="fl.client_optimizer",
    )
    return LocalTraining(
        loss_fn=loss_fn,
        optimizer=optimizer,
        local_steps=int(fl.local_steps if local_steps is None else local_steps),
        batch_size=int(fl.batch_size),
        batch_transform=batch_transform,
        unroll=bool(fl.get("unroll_local_steps", False)),
        gradient_fn=None if dpsgd is None else _dp_gradient_fn(dpsgd),
    )


def _dp_gradient_fn(mechanism):
    from fedtransfer_jax.privacy import dpsgd  # noqa: PLC0415

    return dpsgd.dp_gradient_fn(mechanism)


def augmentation(config: ml_collections.ConfigDict) -> augment_lib.Augment | None:
    """`config.augment` resolved (None: off, or a config from before the section existed)."""
    return augment_lib.resolve(config.get("augment", None))


def augmentation_summary(config: ml_collections.ConfigDict) -> dict | str:
    """summary.json's `methods.<m>.augmentation`: the settings every method trained with, or 'off'."""
    return augment_lib.describe(config.get("augment", None))


def build_algorithm(spec: MethodSpec, local: LocalTraining, client_lr: float):
    return algorithms.build_algorithm(
        spec.algorithm, local, spec.hparams, client_lr=client_lr, name=spec.name, key=f"method_specs.{spec.name}"
    )


def client_lr_schedule(config: ml_collections.ConfigDict) -> Callable | None:
    """`fl.lr_schedule` over the run's `fl.rounds` (fl/optimizers.py make_schedule): lr(round index), or None
    for 'constant' (then every method builds exactly the optimizer it built before schedules existed)."""
    fl = config.fl
    return optimizers.make_schedule(
        str(fl.get("lr_schedule", "constant")),
        float(fl.client_lr),
        int(fl.rounds),
        warmup_rounds=int(fl.get("lr_warmup_rounds", 0)),
        final_fraction=float(fl.get("lr_final_fraction", 0.0)),
    )


def lr_schedule_summary(config: ml_collections.ConfigDict) -> dict:
    """What summary.json records of the schedule (per method: the same for every method of a run)."""
    fl = config.fl
    out = {"name": str(fl.get("lr_schedule", "constant")), "client_lr": float(fl.client_lr), "index": "round"}
    schedule = client_lr_schedule(config)
    if schedule is not None:
        out.update(
            warmup_rounds=int(fl.get("lr_warmup_rounds", 0)),
            final_fraction=float(fl.get("lr_final_fraction", 0.0)),
            first_round_lr=float(schedule(0)),
            last_round_lr=float(schedule(int(fl.rounds) - 1)),
        )
    return out


def build_method_algorithm(
    config: ml_collections.ConfigDict, spec: MethodSpec, local_at: Callable[[Any], LocalTraining]
):
    """The method's algorithm with the run's learning-rate schedule: `local_at(lr)` is its local training
    with learning rate `lr` (None: fl.client_lr). Constant: `build_algorithm` exactly as before; otherwise
    the clients of round r train with schedule(r) (fl/algorithms/base.py with_client_lr_schedule)."""
    lr0 = float(config.fl.client_lr)
    schedule = client_lr_schedule(config)
    if schedule is None:
        return build_algorithm(spec, local_at(None), lr0)
    return base_lib.with_client_lr_schedule(lambda lr: build_algorithm(spec, local_at(lr), lr), schedule)


def build_aggregation(
    spec: MethodSpec, clients_per_round: int
) -> tuple[agg_lib.Aggregator, agg_lib.SumProtocol]:
    """The method's aggregator (mean or DP) and sum protocol (plain or secure aggregation)."""
    agg_cfg = dict(spec.aggregator)
    name = agg_cfg.pop("name", "mean")
    for k in ACCOUNTING_KEYS:  # how epsilon is computed, not how the aggregator works
        agg_cfg.pop(k, None)
    key = f"method_specs.{spec.name}"
    if name == "mean":
        if agg_cfg:
            raise ValueError(f"config key {key}.aggregator.{sorted(agg_cfg)[0]}: the 'mean' aggregator has none")
        aggregator = agg_lib.weighted_mean()
    else:
        from fedtransfer_jax.privacy import dp  # noqa: PLC0415 (only DP runs need it)

        aggregator = dp.aggregator_from_config(agg_cfg, clients_per_round, key=f"{key}.aggregator")
    secure = dict(spec.secure)
    if secure.pop("enabled", False):
        from fedtransfer_jax.privacy import secagg  # noqa: PLC0415

        protocol = secagg.protocol_from_config(secure, clients_per_round, key=f"{key}.secure")
    else:
        protocol = agg_lib.plain_sum()
    return aggregator, protocol


def round_config(config: ml_collections.ConfigDict, clients_per_round: int, *, federated: bool, mesh) -> federated_round.RoundConfig:
    fl = config.fl
    strategy = fl.strategy if federated else "vmap"  # one client: no client parallelism either way
    if strategy not in strategy_lib.STRATEGIES:
        raise ValueError(f"config key fl.strategy: unknown strategy {strategy!r}; choose from {strategy_lib.STRATEGIES}")
    return federated_round.RoundConfig(
        clients_per_round=int(clients_per_round),
        strategy=strategy,
        chunk_size=int(fl.get("chunk_size", 0)),
        dropout_rate=float(fl.get("dropout_rate", 0.0)) if federated else 0.0,
    )


_CLAMP_WARNED: set = set()


def clients_per_round(config: ml_collections.ConfigDict, num_clients: int) -> int:
    """`fl.clients_per_round` (0 = all clients), at most the number of clients.

    More than there are clients is clamped with a warning naming the key, not an error: the default
    config's 4 is what a user with a 2- or 3-lab folder (README's real-data command) gets without asking.
    """
    k = int(config.fl.clients_per_round) or num_clients
    if k > num_clients and (k, num_clients) not in _CLAMP_WARNED:
        _CLAMP_WARNED.add((k, num_clients))
        absl_logging.warning(
            "config key fl.clients_per_round=%d but there are only %d clients: every round uses all %d "
            "(set --config.fl.clients_per_round=0 for all clients, or fewer)",
            k,
            num_clients,
            num_clients,
        )
    return min(k, num_clients)


def _check_positive(value: Any, key: str) -> None:
    """A learning rate (or other strictly positive setting): finite and > 0, else an error naming `key`."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {key} must be a positive number, got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"config key {key} must be a positive number, got {value!r}")


DATA_SOURCES = ("synthetic", "folder", "mixed", "prior_labs")  # data/clients.py reads each


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fails early, naming the offending key (unknown override keys are already rejected by config_flags)."""
    for name in config.methods:
        method_spec(config, name)
    if config.fl.strategy not in strategy_lib.STRATEGIES:
        raise ValueError(
            f"config key fl.strategy: unknown strategy {config.fl.strategy!r}; choose from {strategy_lib.STRATEGIES}"
        )
    for key in ("rounds", "local_steps", "batch_size"):
        if int(config.fl[key]) < 1:
            raise ValueError(f"config key fl.{key} must be >= 1, got {config.fl[key]}")
    if not 0.0 <= float(config.fl.get("dropout_rate", 0.0)) < 1.0:
        raise ValueError(f"config key fl.dropout_rate must be in [0, 1), got {config.fl.dropout_rate}")
    optimizers.make_optimizer(config.fl.client_optimizer, 1.0, key="fl.client_optimizer")
    # Learning rates: a negative one trains uphill without any error (and exits 0).
    _check_positive(config.fl.client_lr, "fl.client_lr")
    if "style" in config and "lr" in config.style:
        _check_positive(config.style.lr, "style.lr")
    for name in config.methods:
        spec = method_spec(config, name)
        if spec.federated:
            hp = algorithms.resolve_hparams(spec.algorithm, spec.hparams, f"method_specs.{name}.hparams")
            for k in sorted(hp):
                if k.endswith("_lr"):
                    _check_positive(hp[k], f"method_specs.{name}.hparams.{k}")
    # Learning-rate schedule (fl/optimizers.py) and model selection on validation tiles (runners.py).
    client_lr_schedule(config)  # errors name fl.lr_schedule / fl.lr_warmup_rounds / fl.lr_final_fraction
    ev = config.get("eval", None) or {}
    every = ev.get("every_rounds", 0)
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ValueError(f"config key eval.every_rounds must be an integer >= 0 (0 = off), got {every!r}")
    select = ev.get("select", "last")
    if select not in SELECT:
        raise ValueError(f"config key eval.select: unknown {select!r}; choose from {SELECT}")
    if select == "best_val" and every == 0:
        raise ValueError(
            "config key eval.select='best_val' needs validation: set eval.every_rounds >= 1 (it is 0)"
        )
    whole = ev.get("whole_images", 0)
    if not isinstance(whole, int) or isinstance(whole, bool) or whole < 0:
        raise ValueError(f"config key eval.whole_images must be an integer >= 0 (0 = off), got {whole!r}")
    whole_size = ev.get("whole_image_size", 256)
    if whole and (not isinstance(whole_size, int) or isinstance(whole_size, bool) or whole_size < 8):
        raise ValueError(f"config key eval.whole_image_size must be an integer >= 8 px, got {whole_size!r}")
    if int(config.fl.get("clients_per_round", 0)) < 0:
        raise ValueError(f"config key fl.clients_per_round must be >= 0 (0 = all clients), got {config.fl.clients_per_round}")
    if str(config.get("init_from_method", "") or "") and not str(config.get("init_from", "") or ""):
        raise ValueError(
            f"config key init_from_method={config.init_from_method!r} names a method of init_from, which is not "
            "set: add --config.init_from=shipped or =WORKDIR, or leave init_from_method out"
        )
    if "data" in config:
        intensity.check_mode(config.data.get("intensity", intensity.RAW))  # the error names data.intensity
    augmentation(config)  # probabilities, ranges, unknown keys of config.augment
    # Data keys that only fail deep inside the data build (after config.json is written) otherwise.
    if "model" in config:
        models.check_config(config.model)  # names model.name / model.dtype; starts no backend (launch logs first)
    if "data" in config:
        data = config.data
        source = data.get("source", "synthetic")
        if source not in DATA_SOURCES:
            raise ValueError(f"config key data.source: unknown {source!r}; choose from {DATA_SOURCES}")
        if source in ("synthetic", "mixed") and not tuple(data.get("clients", ()) or ()):
            raise ValueError(f"config key data.clients is empty: name the labs to train on (data.source={source!r})")
        if "image_size" in data and int(data.image_size) < 8:
            raise ValueError(f"config key data.image_size must be >= 8 px, got {data.image_size}")
        if "tile_size" in data and int(data.tile_size) < 1:
            raise ValueError(f"config key data.tile_size must be >= 1 px, got {data.tile_size}")
        if "tile_overlap" in data and "tile_size" in data and not 0 <= int(data.tile_overlap) < int(data.tile_size):
            raise ValueError(
                f"config key data.tile_overlap must be in [0, data.tile_size={data.tile_size}), got {data.tile_overlap}"
            )
        if data.get("group_regex", ""):
            try:
                re.compile(data.group_regex)
            except re.error as e:
                raise ValueError(
                    f"config key data.group_regex: {data.group_regex!r} is not a valid regular expression ({e})"
                ) from None


def check_data_folder(config: ml_collections.ConfigDict) -> None:
    """A run on real micrographs (data.source 'folder' or 'mixed') names an existing data.dir: checked by
    launch before the workdir is made (validate_config leaves it out, so a config can be checked on a
    machine without the data)."""
    data = config.get("data", None) or {}
    if data.get("source", "") not in ("folder", "mixed"):
        if str(data.get("dir", "") or ""):
            raise ValueError(
                f"config key data.dir is set ({data.dir}) but data.source is {data.get('source', '')!r}, which does "
                "not read it: add --config.data.source=folder to train on that folder (or mixed, beside the "
                "synthetic labs), or leave data.dir out"
            )
        return
    folder = str(data.get("dir", "") or "")
    if not folder:
        raise ValueError(
            f"config key data.dir is empty: source {data.source!r} reads labelled micrographs from a folder "
            "(--config.data.dir=MINE, holding MINE/images and MINE/labels)"
        )
    if not os.path.isdir(folder):
        raise ValueError(f"config key data.dir: {folder} is not a folder")
    # The trained client folders split as the run will split them (file names only, no pixels read), so too
    # few micrographs for a test and a validation split is refused before the workdir too.
    from fedtransfer_jax.data import clients as clients_lib, folder as folder_lib  # noqa: PLC0415

    try:
        found = folder_lib.discover_clients(folder)
        unseen = set(clients_lib.as_names(data.get("unseen_clients", ()), "unseen_clients"))
        if data.source == "mixed":
            kinds = clients_lib.mixed_client_kinds(data)
            trained = [n for n, kind in kinds.items() if kind == "folder" and n not in unseen]
        else:
            named = clients_lib.as_names(data.get("clients", ()), "clients")
            trained = [n for n in (named or found) if n in found and n not in unseen]
        for name in trained:
            clients_lib.folder_split(folder_lib.list_pairs(found[name]), data, name)
    except OSError as e:  # a missing label or folder: named by the message; not the workdir's fault
        raise ValueError(str(e)) from None


def check_batch_size(config: ml_collections.ConfigDict, num_examples: Mapping[str, int]) -> None:
    """`fl.batch_size` no larger than the largest client's training set (a bigger batch only repeats the
    same tiles, and one of 100000 runs out of memory), unless `fl.allow_batch_repeats` says the repeats are
    meant (a lab with a few labelled micrographs, alone). `num_examples`: client -> training examples."""
    if not num_examples or bool(config.fl.get("allow_batch_repeats", False)):
        return
    largest = max(num_examples, key=lambda c: num_examples[c])
    n = int(num_examples[largest])
    if int(config.fl.batch_size) > n:
        raise ValueError(
            f"config key fl.batch_size={config.fl.batch_size} is larger than every client's training set "
            f"(the largest, {largest!r}, has {n} tiles): use --config.fl.batch_size={n} or less "
            "(or --config.fl.allow_batch_repeats=True where repeated tiles are meant)"
        )


def privacy_accounting(spec: MethodSpec, *, rounds: int, clients_per_round: int, num_clients: int) -> dict | None:
    """User-level (epsilon, delta) of a DP method after each round (dp-accounting; privacy/accounting.py).

    The round samples exactly `clients_per_round` distinct clients, so the accountant's event is fixed-size
    sampling without replacement with replace-one neighbours (sensitivity 2C, see privacy/accounting.py), or
    no sampling when every client takes part; `epsilon_without_sampling_amplification` is the number against
    a party that knows the sample (the server). With adaptive clipping the
    noise is split between the update and the clipped-count query, and epsilon is accounted with the
    effective noise multiplier of the two together. Returns None for non-DP methods.
    """
    agg = dict(spec.aggregator)
    if agg.get("name", "mean") != "dp":
        return None
    from fedtransfer_jax.privacy import accounting  # noqa: PLC0415

    delta = float(agg.get("delta", ACCOUNTING_KEYS["delta"]))
    acct = str(agg.get("accountant", ACCOUNTING_KEYS["accountant"]))
    z = float(agg["noise_multiplier"])
    sampling = "none" if clients_per_round >= num_clients else "fixed"
    curve = accounting.epsilon_curve(z, rounds, clients_per_round, num_clients, delta, sampling=sampling, accountant=acct)
    # Against a party that sees the sample (the server itself) sampling does not amplify: report that too.
    no_amp = accounting.epsilon(z, rounds, clients_per_round, num_clients, delta, sampling="none", accountant=acct)
    out = {
        "mechanism": "DP-FedAvg (McMahan et al. 2018): per-client clipping, Gaussian noise on the sum",
        "protects": "the released models (per round and final) against anyone who does not see the sample",
        "unit": "user (client) level",
        "noise_multiplier": z,
        "clip_norm": float(agg["clip_norm"]),
        "adaptive_clipping": bool(agg.get("adaptive", False)),
        "delta": delta,
        "accountant": acct,
        "sampling": sampling,
        "q": clients_per_round / num_clients,
        "rounds": int(rounds),
        "epsilon": float(curve.cumulative[-1]) if len(curve.cumulative) else 0.0,
        "epsilon_one_round": float(curve.per_round),
        "epsilon_without_sampling_amplification": float(no_amp),
        "epsilon_per_round_cumulative": [float(e) for e in curve.cumulative],
    }
    return out


def example_privacy_accounting(
    spec: MethodSpec, *, rounds: int, local_steps: int, units_per_client: Mapping[str, int]
) -> dict | None:
    """Example-level (epsilon, delta) per micrograph of a DP-SGD method (privacy/dpsgd.py), per client and
    the worst over clients; None for methods without `dpsgd`.

    Every local step is a Poisson-sampled Gaussian mechanism at q = B / U (U: the client's real
    micrographs), composed over rounds x local steps: every round is counted, also when a client was not
    sampled (conservative; exact when every client trains every round). A physical batch cap adds
    steps x P[a step samples more than the cap] to delta. Validation tiles and the aggregation weight
    (the client's example count) are not covered: they are not training micrographs' gradients."""
    mech = dpsgd_mechanism(spec)
    if mech is None:
        return None
    from fedtransfer_jax.privacy import dpsgd  # noqa: PLC0415

    d = spec.dpsgd
    steps = int(rounds) * int(local_steps)
    delta, acct = float(d["delta"]), str(d["accountant"])
    per_client = {}
    for name, units in units_per_client.items():
        units = int(units)
        trunc = steps * dpsgd.truncation_probability(mech.units_per_batch, units, mech.max_units_per_step)
        per_client[name] = {
            "micrographs": units,
            "q": dpsgd.sampling_rate(mech.units_per_batch, units) if units else 0.0,
            "epsilon": (
                dpsgd.epsilon(mech.noise_multiplier, steps, mech.units_per_batch, units, delta, accountant=acct)
                if units
                else 0.0
            ),
            "delta": delta + trunc,
        }
    worst = max(per_client.values(), key=lambda c: (c["epsilon"], c["delta"])) if per_client else None
    return {
        "mechanism": "DP-SGD (Abadi et al. 2016) inside every client: Poisson sampling of micrographs, "
        "per-micrograph clipping, Gaussian noise on the sum, fixed denominator B",
        "protects": "each training micrograph of a client against everything its updates release",
        "unit": f"micrograph ({mech.tiles_per_unit} tile{'s' if mech.tiles_per_unit > 1 else ''})",
        "noise_multiplier": mech.noise_multiplier,
        "clip_norm": mech.clip_norm,
        "units_per_batch": mech.units_per_batch,
        "max_units_per_step": mech.max_units_per_step,
        "noise_std_of_mean": dpsgd.noise_std_of_mean(mech),
        "steps": steps,
        "accountant": acct,
        "delta": worst["delta"] if worst else delta,
        "epsilon": worst["epsilon"] if worst else 0.0,
        "per_client": per_client,
    }
