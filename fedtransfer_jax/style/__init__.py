"""Style sharing for FedTransfer: clients share style statistics, never images or labels.

- ``techniques``: the style-technique registry (``get_technique``: adain, fourier, gen) behind one
  ``StyleTechnique`` interface, the generic bank and in-jit ``mix_batch`` (what the trainer uses).
- ``parametric`` + ``labelmaps``: the label-conditioned imaging model of the ``gen`` method.
- ``checks`` / ``features`` / ``report`` / ``federated``: style-fidelity, polarity and structure checks and
  the standalone protocol behind ``scripts/style_checks.py`` (docs/STYLE.md has the findings).
- ``adain``: per-channel feature statistics and AdaIN (Huang & Belongie 2017).
- ``network``: a small AdaIN style-transfer net (``StyleNet``) and its self-supervised loss.
- ``fourier``: low-frequency Fourier amplitude windows and amplitude swapping (FedDG-ELCFS).
"""

from fedtransfer_jax.style.adain import adain, feature_stats
from fedtransfer_jax.style.fourier import fourier_restyle, low_freq_amplitude, window_radius
from fedtransfer_jax.style.techniques import StyleTechnique, get_technique, mix_batch
from fedtransfer_jax.style.network import (
    StyleNet,
    init_style_net,
    style_loss_fn,
    style_partner,
    trainable_mask,
)

__all__ = [
    "StyleTechnique",
    "get_technique",
    "mix_batch",
    "adain",
    "feature_stats",
    "fourier_restyle",
    "low_freq_amplitude",
    "window_radius",
    "StyleNet",
    "init_style_net",
    "style_loss_fn",
    "style_partner",
    "trainable_mask",
]
