"""AdaIN style sharing (FedTransfer's original method, Ma et al. 2021) behind the ``StyleTechnique`` interface.

Shared model: the AdaIN ``StyleNet`` (fixed random encoder, trained decoder), trained federatedly with its
self-supervised loss (``style.network.style_loss_fn``: each client pairs its own images). Client message:
the per-level feature mean/std of K of its images. Render: AdaIN of the image's features to a drawn
target style, decoded. Labels are ignored (AdaIN is label-free).

Known limits (measured in docs/STYLE.md): AdaIN maps every channel monotonically (``std * x_hat + mean``
with ``std > 0``), and the decoder only ever sees within-lab style pairs during training, so it cannot
turn dark grooves into bright lines ("as darkfield" keeps dark boundaries); ``padding='reflect'`` removes
the border seams that zero padding caused.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from fedtransfer_jax.style.techniques.base import StyleTechnique, pick_styles, stack_messages
from fedtransfer_jax.style.network import StyleNet, init_style_net, style_loss_fn, trainable_mask

DEFAULTS = {
    "features": (16, 32, 64),  # style network encoder widths (D = last)
    "train_encoder": False,  # False: fixed random encoder, only the decoder trains
    "padding": "reflect",  # style net convs ('zero' gave tile-border seams: docs/STYLE.md)
    "content_weight": 1.0,
    "style_weight": 1.0,
    "identity_weight": 1.0,
    "alpha": 1.0,  # AdaIN strength when restyling
}


def make(cfg) -> StyleTechnique:
    """``cfg``: mapping with the ``DEFAULTS`` keys (missing keys take the defaults)."""
    c = {k: cfg.get(k, v) for k, v in DEFAULTS.items()}
    net = StyleNet(
        features=tuple(c["features"]), train_encoder=bool(c["train_encoder"]), padding=c["padding"]
    )

    def init_shared(key, tile):
        return init_style_net(net, key, tile)

    loss = functools.partial(
        style_loss_fn,
        net,
        content_weight=float(c["content_weight"]),
        style_weight=float(c["style_weight"]),
        identity_weight=float(c["identity_weight"]),
    )

    def client_message(shared, images, labels, mask, key):
        del labels, key
        mean, std = net.apply({"params": shared}, images, method=StyleNet.style_stats)
        return {"adain_mean": mean, "adain_std": std, "valid": mask.astype(bool)}

    def render(shared, bank, images, labels, targets, key):
        del labels
        style = pick_styles(bank, targets, key)
        return net.apply(
            {"params": shared},
            images,
            style["adain_mean"],
            style["adain_std"],
            alpha=float(c["alpha"]),
            method=StyleNet.stylize,
        )

    return StyleTechnique(
        name="adain",
        init_shared=init_shared,
        shared_loss=loss,
        client_message=client_message,
        build_bank=stack_messages,
        render=render,
        shared_trainable=lambda p: trainable_mask(p, bool(c["train_encoder"])),
        info={"kind": "adain", **{k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()}},
    )
