"""Style sharing for FedTransfer: clients share style statistics, never images or labels.

- ``adain``: per-channel feature statistics and AdaIN (Huang & Belongie 2017).
- ``network``: a small AdaIN style-transfer net (``StyleNet``) and its self-supervised loss.
- ``fourier``: low-frequency Fourier amplitude windows and amplitude swapping (FedDG-ELCFS).
- ``bank``: the server-stacked ``StyleBank``, foreign-style sampling and in-jit batch restyling.
"""

from fedtransfer_jax.style.adain import adain, feature_stats
from fedtransfer_jax.style.bank import (
    StyleBank,
    build_bank,
    client_styles,
    foreign_style_probs,
    restyle_batch,
    sample_foreign_style,
    sample_foreign_style_index,
)
from fedtransfer_jax.style.fourier import fourier_restyle, low_freq_amplitude, window_radius
from fedtransfer_jax.style.network import (
    StyleNet,
    init_style_net,
    style_loss_fn,
    style_partner,
    trainable_mask,
)

__all__ = [
    "adain",
    "feature_stats",
    "StyleBank",
    "build_bank",
    "client_styles",
    "foreign_style_probs",
    "restyle_batch",
    "sample_foreign_style",
    "sample_foreign_style_index",
    "fourier_restyle",
    "low_freq_amplitude",
    "window_radius",
    "StyleNet",
    "init_style_net",
    "style_loss_fn",
    "style_partner",
    "trainable_mask",
]
