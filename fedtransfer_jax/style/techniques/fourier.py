"""Fourier amplitude style sharing (FedDG-ELCFS, Liu et al. 2021) behind the ``StyleTechnique`` interface.

No shared model. Client message: the centred low-frequency amplitude window (``[2b+1, 2b+1, 3]``) of K of
its images. Render: the window of a drawn target style replaces (``lam`` ~ U(fourier_lam)) the image's own
low-frequency amplitude; the phase is kept. Labels are ignored.

Known limit (docs/STYLE.md): polarity lives in the phase. ``1 - x`` has the amplitude of ``x`` at every
frequency but DC and the phase shifted by pi, so an amplitude-only exchange can never turn dark grooves into
bright lines; a small window (b = 3 at 64 px) moves only brightness and slow shading, and pasting another
image's low-frequency amplitudes under this image's phases makes blotches.
"""

from __future__ import annotations

import jax

from fedtransfer_jax.style.fourier import fourier_restyle, low_freq_amplitude
from fedtransfer_jax.style.techniques.base import StyleTechnique, pick_styles, stack_messages

DEFAULTS = {
    "fourier_beta": 0.1,  # low-frequency window: b = floor(beta * tile / 2)
    "fourier_lam": (0.5, 1.0),  # amplitude interpolation range, drawn per image
}


def make(cfg) -> StyleTechnique:
    beta = float(cfg.get("fourier_beta", DEFAULTS["fourier_beta"]))
    lo, hi = (float(v) for v in cfg.get("fourier_lam", DEFAULTS["fourier_lam"]))

    def client_message(shared, images, labels, mask, key):
        del shared, labels, key
        return {"fourier_amp": low_freq_amplitude(images, beta), "valid": mask.astype(bool)}

    def render(shared, bank, images, labels, targets, key):
        del shared, labels
        k_style, k_lam = jax.random.split(key)
        amp = pick_styles(bank, targets, k_style)["fourier_amp"]
        lam = jax.random.uniform(k_lam, (images.shape[0],), minval=lo, maxval=hi)
        return fourier_restyle(images, amp, beta, lam)

    return StyleTechnique(
        name="fourier",
        init_shared=lambda key, tile: None,
        shared_loss=None,
        client_message=client_message,
        build_bank=stack_messages,
        render=render,
        info={"kind": "fourier", "fourier_beta": beta, "fourier_lam": [lo, hi]},
    )


# ---------------------------------------------------------------------------------------------------------
# Privacy-audit declaration (base.StyleAudit; fedtransfer_jax.privacy.audit attacks what clients send).
# ---------------------------------------------------------------------------------------------------------
def make_audit(cfg, *, seed: int, image_size: int):
    """The low-frequency amplitude window of one image; scored with the amplitude correlation and up to the
    180-degree "twin" an amplitude spectrum cannot tell apart."""
    from fedtransfer_jax.style.techniques.base import StyleAudit

    del seed, image_size
    beta = float(cfg.get("fourier_beta", DEFAULTS["fourier_beta"]))
    stats = lambda x: low_freq_amplitude(x[None], beta)[0]  # noqa: E731
    return StyleAudit(
        message=lambda x, y: stats(x),
        statistics=stats,
        what_is_sent={
            "style_stats_fourier": (
                "per shared image, the centred low-frequency window of the Fourier amplitude (no phase): "
                "mean colour, contrast of slow shading; an image and its 180-degree rotation (and circular "
                "shifts) share it"
            )
        },
        score_kwargs={"beta": beta, "twin": True},
        notes=(f"Fourier window beta={beta}.",),
    )
