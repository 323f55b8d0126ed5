"""``gen``: label-conditioned rendering of any lab's appearance (polarity, colour, texture) from labels.

Each client fits the generic imaging model of ``style.parametric`` to K of its own labelled tiles and
shares the fitted parameters (a few hundred numbers per tile: grain-tone colour distribution, signed
boundary profile, blur, along-boundary contrast variation, residual colour axes and binned power spectra);
every client then renders its *own label maps* in the drawn foreign lab's style: exact geometry, the
target's polarity and colour, fresh random grain tones and noise.

No shared network is needed (``init_shared`` returns None, nothing to train federatedly): the parametric
renderer beat a FedAvg-trained conv generator on the style checks at a fraction of the cost (docs/STYLE.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fedtransfer_jax.style import parametric
from fedtransfer_jax.style.techniques.base import StyleBank, StyleTechnique, pick_styles, stack_messages

DEFAULTS = {
    "gen_profile_px": 6,  # signed boundary profile length (px from a labelled boundary)
    "gen_modulation_px": 6.0,  # correlation length of the along-boundary contrast modulation
    "gen_noise_scale": 1.0,  # amplitude of the rendered residual noise field (1 = as fitted)
    "gen_noise_min_px": 2,  # noise spectrum measured on pixels >= this far from a boundary (0 = all)
}


def make(cfg) -> StyleTechnique:
    c = {k: cfg.get(k, v) for k, v in DEFAULTS.items()}
    radius = int(c["gen_profile_px"])

    def client_message(shared, images, labels, mask, key):
        del shared, key
        styles = jax.vmap(
            lambda x, y: parametric.fit_style(
                x, y, profile_px=radius, noise_min_px=int(c["gen_noise_min_px"])
            )
        )(images, labels)
        return {**styles._asdict(), "valid": mask.astype(bool)}

    def render(shared, bank, images, labels, targets, key):
        del shared
        k_style, k_render = jax.random.split(key)
        picked = pick_styles(bank, targets, k_style)
        style = parametric.ImagingStyle(**{f: picked[f] for f in parametric.ImagingStyle._fields})
        keys = jax.random.split(k_render, images.shape[0])
        out = jax.vmap(
            lambda s, y, k: parametric.render_style(
                s, y, k, modulation_px=float(c["gen_modulation_px"]), noise_scale=float(c["gen_noise_scale"])
            )
        )(style, labels, keys)
        return out.astype(images.dtype)

    def prior_bank(key, k):
        styles = jax.vmap(lambda kk: parametric.sample_prior_style(kk, radius))(jax.random.split(key, k))
        return StyleBank({f: v[None] for f, v in styles._asdict().items()}, jnp.ones((1, k), bool))

    return StyleTechnique(
        name="gen",
        init_shared=lambda key, tile: None,
        shared_loss=None,
        client_message=client_message,
        build_bank=stack_messages,
        render=render,
        info={"kind": "parametric", "floats_per_style": parametric.style_size(radius), **c},
        prior_bank=prior_bank,
    )


# ---------------------------------------------------------------------------------------------------------
# Privacy-audit declaration (base.StyleAudit; fedtransfer_jax.privacy.audit attacks what clients send).
# ---------------------------------------------------------------------------------------------------------
def make_audit(cfg, *, seed: int, image_size: int):
    """The fit of one tile with its own label map. The server lacks that label and some fields are not
    differentiable in the image, so the attack (privacy/audit/gen_inversion.py) fits a guessed label and
    matches a smooth equivalent of the message."""
    from fedtransfer_jax.privacy.audit import gen_inversion  # lazy: the audit imports this registry

    del seed, image_size
    return gen_inversion.gen_style_audit(
        int(cfg.get("gen_profile_px", DEFAULTS["gen_profile_px"])),
        int(cfg.get("gen_noise_min_px", DEFAULTS["gen_noise_min_px"])),
        what_is_sent={
            "style_message_gen": (
                "per shared tile, the imaging model fitted to the tile *with its own label map* "
                "(style.parametric.fit_style, a few hundred floats): grain-tone mean colour and covariance "
                "square root, tone blur, the signed boundary profile vs distance to the labelled boundary, "
                "along-boundary contrast variation, shading coefficients (x, y, x^2, xy, y^2), the "
                "residual's colour axes and their binned power spectra measured >= noise_min_px from a "
                "boundary; no image-shaped array, but every field is measured relative to the tile's label "
                "map"
            )
        },
    )
