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


# ---------------------------------------------------------------------------------------------------------
# Privacy-audit declaration (base.StyleAudit; fedtransfer_jax.privacy.audit attacks what clients send).
# ---------------------------------------------------------------------------------------------------------
def make_audit(cfg, *, seed: int, image_size: int):
    """The AdaIN statistics of one image, from the frozen random encoder re-initialised from the run's seed
    exactly as training does (the checkpointed style net is not read)."""
    from fedtransfer_jax.data.seeds import STYLE_MODEL_INIT_TAG
    from fedtransfer_jax.style.techniques.base import StyleAudit

    net = StyleNet(
        features=tuple(cfg.get("features", DEFAULTS["features"])),
        padding=cfg.get("padding", DEFAULTS["padding"]),
    )
    # Only the encoder computes statistics: initialise just it (flax derives each parameter's key from its
    # module path, so these equal the encoder of `init_style_net` with the training key; a test checks).
    dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    init = jax.jit(lambda k: net.init(k, dummy, method=StyleNet.encode)["params"])
    params = init(jax.random.fold_in(jax.random.PRNGKey(int(seed)), STYLE_MODEL_INIT_TAG))

    def stats(x):
        mean, std = net.apply({"params": params}, x[None], method=StyleNet.style_stats)
        return {"mean": mean[0], "std": std[0]}

    caveats = ()
    if cfg.get("train_encoder", DEFAULTS["train_encoder"]):
        caveats = (
            "style.train_encoder=True: the shared AdaIN statistics came from a trained encoder; this "
            "audit recomputes them with the initial one (the checkpointed style net is not read).",
        )
    return StyleAudit(
        message=lambda x, y: stats(x),
        statistics=stats,
        what_is_sent={
            "style_stats_adain": (
                "per shared image, the mean and std of every channel of every level of the style encoder's "
                "features (spatially pooled, so a translation of the image barely changes them; zero padding "
                "makes the borders an exception)"
            )
        },
        caveats=caveats,
    )
