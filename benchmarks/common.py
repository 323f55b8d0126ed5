"""Shared pieces of the round benchmarks (`round_speed.py`, `experiments/scaling.py`).

Kept framework-light on purpose: the synthetic data is numpy (so the JAX one-jit round, the per-step
jitted loop and the PyTorch baseline all train on byte-identical inputs), and the FLOP count is derived
from the U-Net's own parameter tree (so it cannot drift from the model when the architecture changes).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedtransfer_jax.fl.optimizers import make_optimizer
from fedtransfer_jax.models import UNet, make_segmentation_loss
from fedtransfer_jax.models import unet as unet_lib
from fedtransfer_jax.models.conv import default_impl

BOUNDARY_WEIGHT = 3.0  # same loss weights as experiments/grains.py
DICE_WEIGHT = 1.0
BACKWARD_FACTOR = 2.0  # backward FLOPs ~ 2x forward (input grad + filter grad, one conv each)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Everything that defines one benchmarked round; identical for every implementation."""

    clients: int = 8
    local_steps: int = 4
    batch_size: int = 4
    image_size: int = 64
    features: tuple[int, ...] = (16, 32, 64)
    optimizer: str = "sgd"  # client optimizer: 'sgd' | 'adam' (fresh state every round)
    lr: float = 1e-2
    seed: int = 0
    strategy: str = (
        "auto"  # one-jit client strategy: auto (per-backend default) | vmap | chunked | sequential
    )
    chunk_size: int = 0
    conv_impl: str = ""  # '' = models.conv.default_impl() for the backend
    unroll: bool = False  # unroll local steps instead of lax.scan
    dtype: str = "float32"  # compute dtype of the U-Net ('bfloat16': bf16 compute, float32 params and loss)
    norm_impl: str = ""  # GroupNorm impl: '' = models.unet.default_norm_impl(), 'flax', 'fused'
    fast_pool: bool = True  # models.conv.max_pool_2x2 (the U-Net default) instead of nn.max_pool
    image_dtype: str = (
        "uint8"  # client images on device: 'uint8' (decoded in the step, as in training) | 'float32'
    )
    devices: int = 0  # one-jit round: a `clients` mesh over this many devices (0 = all, as the engine; 1 = none)

    @property
    def examples_per_client(self) -> int:
        """N = S*B: one local epoch per round sees every example once."""
        return self.local_steps * self.batch_size

    @property
    def images_per_round(self) -> int:
        return self.clients * self.local_steps * self.batch_size

    def resolved_conv_impl(self) -> str:
        return self.conv_impl or default_impl()

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        d["conv_impl"] = self.resolved_conv_impl()
        d["norm_impl"] = self.norm_impl or unet_lib.default_norm_impl()
        d["examples_per_client"] = self.examples_per_client
        d["images_per_round"] = self.images_per_round
        return d


IMAGE_DTYPES = ("uint8", "float32")
DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def make_data(cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random (images [C,N,H,W,3] 8-bit: uint8, or float32 k/255, labels [C,N,H,W] u8 ~15% boundary,
    mask [C,N] all True).

    Speed only: the values do not matter, the shapes and dtypes match what `run_context.place_clients` puts
    on the device (uint8 images, decoded in the local step); the float32 form decodes to the same values.
    """
    if cfg.image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"--image_dtype: unknown {cfg.image_dtype!r}; choose from {IMAGE_DTYPES}")
    rng = np.random.default_rng([cfg.seed, 1])
    c, n, h = cfg.clients, cfg.examples_per_client, cfg.image_size
    images = rng.integers(0, 256, (c, n, h, h, 3), dtype=np.uint8)
    if cfg.image_dtype == "float32":
        images = images.astype(np.float32) / np.float32(255.0)
    labels = (rng.random((c, n, h, h), dtype=np.float32) < 0.15).astype(np.uint8)  # float32: 4096 clients
    mask = np.ones((c, n), dtype=bool)
    return images, labels, mask


def float_images(images: np.ndarray) -> np.ndarray:
    """Host images as float32 in [0, 1] (for the PyTorch baseline, which keeps float tensors)."""
    images = np.asarray(images)
    return images.astype(np.float32) / np.float32(255.0) if images.dtype == np.uint8 else images


def make_model(cfg: BenchConfig) -> UNet:
    if cfg.dtype not in DTYPES:
        raise ValueError(f"--dtype: unknown {cfg.dtype!r}; choose from {sorted(DTYPES)}")
    return UNet(
        features=tuple(cfg.features),
        conv_impl=cfg.resolved_conv_impl(),
        dtype=DTYPES[cfg.dtype],
        norm_impl=cfg.norm_impl or None,
        fast_pool=cfg.fast_pool,
    )


def init_params(model: UNet, cfg: BenchConfig):
    """Params with the model's tree structure: kernels ~ N(0, 1/fan_in), GroupNorm scale 1, biases 0.

    Shapes come from `jax.eval_shape(model.init)`; values from numpy (seeded), because flax's truncated
    normal initialiser costs ~2 s of XLA:CPU compile per kernel (~15 s for the U-Net) and speed does not
    depend on the init.
    """
    x = jax.ShapeDtypeStruct((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(cfg.seed), x)["params"]
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng([cfg.seed, 0])
    values = []
    for path, leaf in leaves:
        name = getattr(path[-1], "key", str(path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            v = rng.standard_normal(leaf.shape) / np.sqrt(fan_in)
        elif name == "scale":
            v = np.ones(leaf.shape)
        else:
            v = np.zeros(leaf.shape)
        values.append(jnp.asarray(v, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, values)


def make_loss(model: UNet):
    return make_segmentation_loss(model, boundary_weight=BOUNDARY_WEIGHT, dice_weight=DICE_WEIGHT)


def client_optimizer(cfg: BenchConfig) -> optax.GradientTransformation:
    return make_optimizer(cfg.optimizer, cfg.lr, key="--optimizer")


# ------------------------------------------------------------------------------------------- FLOPs


_level = unet_lib._level
conv_shapes = unet_lib.conv_shapes  # (H, W, k, Cin, Cout) of every conv, from the params tree


def forward_flops_per_image(params, image_size: int) -> float:
    """Conv FLOPs of one forward pass: sum of 2*H*W*k*k*Cin*Cout (norms/activations ignored, <2%)."""
    return float(
        sum(2 * h * w * k * k * cin * cout for h, w, k, cin, cout in conv_shapes(params, image_size))
    )


def train_flops_per_round(params, cfg: BenchConfig) -> float:
    """Forward + backward (~2x forward) conv FLOPs over the C*S*B images of a round."""
    return (1.0 + BACKWARD_FACTOR) * forward_flops_per_image(params, cfg.image_size) * cfg.images_per_round


# ------------------------------------------------------------------------------------------ timing


def time_rounds(run_round: Callable[[], Any], rounds: int, warmup: int = 1) -> tuple[float, list[float]]:
    """(first-call seconds, per-round seconds of `rounds` timed calls after `warmup` calls).

    `run_round` must block until its result is ready (e.g. `jax.block_until_ready`).
    """
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    t0 = time.perf_counter()
    run_round()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        run_round()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run_round()
        times.append(time.perf_counter() - t0)
    return first, times


def time_interleaved(
    runs: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, dict[str, Any]]:
    """Times several implementations round-robin (A B C A B C ...), so that a change in the machine's load
    hits all of them alike: per name, the first call's seconds, the `rounds` wall times and the process CPU
    times (all threads) of the timed calls, after `warmup` untimed calls each. Every `run` must block."""
    if rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {rounds}")
    out: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        t0 = time.perf_counter()
        run()
        out[name] = {"first_s": time.perf_counter() - t0, "times": [], "cpu_times": []}
        for _ in range(warmup - 1):
            run()
    for _ in range(rounds):
        for name, run in runs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            out[name]["times"].append(time.perf_counter() - t0)
            out[name]["cpu_times"].append(time.process_time() - c0)
    return out


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median and spread (min, max, relative IQR-ish noise = (max-min)/median) of round times."""
    med = statistics.median(times)
    return {
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "spread": (max(times) - min(times)) / med if med > 0 else 0.0,
    }


def device_string() -> str:
    d = jax.devices()[0]
    return f"{d.device_kind} ({jax.default_backend()}, {jax.device_count()} device(s))"


def parse_int_list(text: str, flag: str) -> list[int]:
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError as e:
        raise ValueError(f"{flag}: expected comma-separated integers, got {text!r}") from e
    if not vals or any(v <= 0 for v in vals):
        raise ValueError(f"{flag}: expected positive integers, got {text!r}")
    return vals
