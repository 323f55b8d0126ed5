"""Models chosen by name from the config, and the loss functions the federated engine trains.

Every loss function has the engine's signature `loss_fn(params, batch, rng) -> (loss, aux)` where
`batch = {"images": [B,H,W,3], "labels": [B,H,W], "mask": [B]}`.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from fedtransfer_jax.models.conv import default_impl
from fedtransfer_jax.models.losses import segmentation_loss
from fedtransfer_jax.models.unet import UNet, count_params

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def check_config(cfg: Any) -> None:
    """`model.name` and `model.dtype` are known (ValueError naming the key); starts no JAX backend."""
    if cfg.name != "unet":
        raise ValueError(f"config key model.name: unknown model {cfg.name!r}; known: ['unet']")
    if cfg.get("dtype", "float32") not in _DTYPES:
        raise ValueError(f"config key model.dtype: unknown dtype {cfg.dtype!r}; choose from {sorted(_DTYPES)}")


def build_model(cfg: Any):
    """Returns the flax module named by `cfg.name`."""
    check_config(cfg)
    return UNet(
        features=tuple(cfg.features),
        groups=cfg.get("groups", 8),
        conv_impl=cfg.get("conv_impl", "") or default_impl(),
        dtype=_DTYPES[cfg.get("dtype", "float32")],
        remat=cfg.get("remat", False),
    )


def make_segmentation_loss(
    model, *, boundary_weight: float, dice_weight: float, cldice_weight: float = 0.0
) -> Callable:
    """Engine-compatible loss for the segmenter."""

    def loss_fn(params, batch, rng):
        del rng  # The segmenter is deterministic; style mixing happens before the loss.
        logits = model.apply({"params": params}, batch["images"])
        return segmentation_loss(
            logits,
            batch["labels"],
            batch["mask"],
            boundary_weight=boundary_weight,
            dice_weight=dice_weight,
            cldice_weight=cldice_weight,
        )

    return loss_fn


__all__ = ["UNet", "build_model", "count_params", "make_segmentation_loss", "segmentation_loss"]
